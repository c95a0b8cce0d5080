"""Fuzz the FCS reader, `cd125gate inspect` and `cd125gate analyze` with mutated real files.

Seeds are the corpus copies in test_data/corpus and the bundled tubes in
test_data. Each mutant changes one thing: a HEADER or TEXT keyword value
(numbers, superscript digits, inf/nan, huge, negative, empty), a dropped or
repeated keyword, an absurdly long number (thousands of digits) in a numeric
keyword, a truncation, non-ASCII bytes, flipped bits, or extreme event values.
Every mutant is run in-process (``cd125gate.cli.main``) and must end in one of
the documented ways:

- ``inspect --json``: exit 0 with strict JSON (no NaN/Infinity), or exit 2
  with exactly one stderr line ``cd125gate: FILE: reason``;
- the analysis read stage (``read_fcs`` with events, the panel, the
  plausibility checks): a result or an ``InputError``, nothing else;
- ``analyze`` (a share of the mutants of bundled tubes, each with its own
  partner tube): exit 0, 3 or 4 with a complete, schema-valid, strict-JSON
  result.json, or exit 2 with one stderr line; a MET or NOT_MET more than 10
  points on the wrong side of 50 % of the simulated truth is a "wrong-answer";

and, always: no other exception (a traceback), within a time bound that
grows with the file size, and the input file unchanged (SHA-256).

    python scripts/fuzz.py --fuzz 5000 --analyze 200 --seed 1

prints counts by mutation class and outcome and writes each failing mutant
(with what it broke) to --keep.
"""

import argparse
import contextlib
import hashlib
import io
import json
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = ROOT / "test_data"
GOOD_CONTROL = TEST_DATA / "low_fmo_control.fcs"
# A MET/NOT_MET on the wrong side of 50 % by this margin of the simulated truth is a silently wrong answer.
WRONG_MARGIN = 0.1

# Keywords whose values steer the parser; mutated more often than the rest.
STEERING = re.compile(rb"^\$(P\d+[BRENGS]|P\d+DATATYPE|TOT|PAR|NEXTDATA|DATATYPE|BYTEORD|MODE|BEGINDATA|ENDDATA|"
                      rb"TIMESTEP|SPILLOVER)$|^SPILL$", re.IGNORECASE)
HOSTILE_VALUES = [
    "", " ", "0", "-1", "1", "2", "7", "\u00b2", "1\u00b2", "\u00b3\u00b2", "\u0661\u0662", "inf", "-inf", "nan",
    "NaN", "1e308", "1e999", "-1e308", "1e-320", "99999999999999999999999", str(2 ** 63), str(2 ** 64 + 1),
    "1_000", "0x10", "1.5", "-0", "*", "\u00ff", "\u2028", "1,2", ",,", "4,3,2,1", "1,2,3,4,5", "3,4,1,2",
    "I", "F", "D", "A", "L", "C", "FCS3.1", "2147483648", "  7  ", "0,0", "4,0", "inf,1", "1,nan", "-2,1",
    "$x$^{y}$", "a\nb", "\t", "\u00e9\u00e8",
]
# Keywords that hold a number (a count, offset, width, range, gain or time step), for absurdly
# long numbers; the spillover count and $DATE's year are handled beside them. Python's int()
# refuses over 4,300 digits, so the lengths straddle that limit.
NUMERIC = re.compile(rb"^\$(PAR|TOT|NEXTDATA|BEGINDATA|ENDDATA|BEGINANALYSIS|ENDANALYSIS|BEGINSTEXT|ENDSTEXT|"
                     rb"P\d+[BRG]|TIMESTEP)$", re.IGNORECASE)
LONG_DIGITS = [21, 400, 4300, 4301, 5000, 50_000]
SPILL_OR_DATE = (b"$SPILLOVER", b"SPILL", b"$SPILL", b"SPILLOVER", b"$DATE")
EXTREME_FLOATS = [float("nan"), float("inf"), float("-inf"), 1e30, -1e30, 0.0, 3.4e38, -3.4e38, 1e-40]


@dataclass
class Seed:
    path: Path
    content: bytes
    version: bytes
    delimiter: bytes
    pairs: list             # [(key bytes, value bytes)]
    text: tuple             # (start, end) of TEXT
    data: tuple | None      # (start, end) of DATA, None if unknown
    datatype: str
    widths: list            # bytes per channel value, [] if unknown


@dataclass
class Outcome:
    mutation: str
    seed: str
    stage: str
    result: str             # "ok-read", "ok-refused", "traceback", "timeout", "contract", "modified", ...
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Tally:
    outcomes: list = field(default_factory=list)

    def add(self, outcome):
        self.outcomes.append(outcome)

    def failures(self):
        return [o for o in self.outcomes if not o.result.startswith("ok")]


class Timeout(Exception):
    pass


# --- Seeds and mutations ---------------------------------------------------------------------------

def seed_files():
    files = sorted(p for p in (TEST_DATA / "corpus").rglob("*") if p.suffix.lower() in (".fcs", ".lmd"))
    return files + sorted(TEST_DATA.glob("*.fcs"))


def split_text(body, delimiter):
    """TEXT body -> tokens, a doubled delimiter standing for the character (as the FCS standard says)."""
    placeholder = b"\x00\x01\x02FUZZ\x02\x01\x00"
    tokens = body.replace(delimiter * 2, placeholder).split(delimiter)
    return [token.replace(placeholder, delimiter) for token in tokens]


def load_seed(path):
    content = path.read_bytes()
    if len(content) < 58 or not content.startswith(b"FCS"):
        return Seed(path, content, b"", b"/", [], (0, 0), None, "", [])
    fields = [content[10 + 8 * i:18 + 8 * i].strip() for i in range(4)]
    numbers = [int(f) if f.isdigit() else 0 for f in fields]
    text_start, text_end = numbers[0], numbers[1]
    raw = content[text_start:text_end + 1]
    if len(raw) < 2:
        return Seed(path, content, content[:6], b"/", [], (text_start, text_end), None, "", [])
    delimiter = raw[:1]
    body = raw[1:-1] if raw.endswith(delimiter) else raw[1:].rstrip(b" \0\r\n\t").rstrip(delimiter)
    tokens = split_text(body, delimiter)
    pairs = list(zip(tokens[::2], tokens[1::2]))
    keywords = {k.strip().upper(): v for k, v in reversed(pairs)}
    data = (numbers[2], numbers[3])
    if data == (0, 0) and b"$BEGINDATA" in keywords:
        try:
            data = (int(keywords[b"$BEGINDATA"]), int(keywords[b"$ENDDATA"]))
        except ValueError:
            data = None
    datatype = keywords.get(b"$DATATYPE", b"").decode("latin-1").strip().upper()
    widths = []
    try:
        for n in range(1, int(keywords[b"$PAR"]) + 1):
            bits = int(keywords[b"$P%dB" % n])
            widths.append({"F": 4, "D": 8}.get(datatype, bits // 8))
    except (KeyError, ValueError):
        widths = []
    return Seed(path, content, content[:6], delimiter, pairs, (text_start, text_end), data, datatype, widths)


def assemble(seed, pairs, data, offset_text=lambda key, offset: b"%020d" % offset):
    """A consistent FCS file: HEADER, TEXT (with fresh $BEGINDATA/$ENDDATA), DATA.

    ``offset_text(key, offset)`` writes $BEGINDATA and $ENDDATA; its length must not depend
    on ``offset`` (the TEXT length is measured with offsets 0).
    """
    d = seed.delimiter
    pairs = [(k, v) for k, v in pairs if k.strip().upper() not in (b"$BEGINDATA", b"$ENDDATA")]

    def text(begin, end):
        items = pairs + [(b"$BEGINDATA", offset_text(b"$BEGINDATA", begin)),
                         (b"$ENDDATA", offset_text(b"$ENDDATA", end))]
        escaped = [part.replace(d, d * 2) for kv in items for part in kv]
        return d + d.join(escaped) + d

    length = len(text(0, 0))
    begin = 58 + length
    end = begin + len(data) - 1 if data else 0
    if not data:
        begin = 0
    header_data = (begin, end) if end <= 99_999_999 else (0, 0)
    header = (seed.version or b"FCS3.1").ljust(6)[:6] + b"    " + b"".join(
        b"%8d" % value for value in (58, 58 + length - 1, *header_data, 0, 0))
    return header + text(begin, end) + data


def seed_data(seed):
    if seed.data is None or seed.data[1] < seed.data[0]:
        return b""
    return seed.content[seed.data[0]:seed.data[1] + 1]


def hostile_value(rng, old):
    choice = rng.random()
    if choice < 0.7:
        return rng.choice(HOSTILE_VALUES).encode("utf-8")
    if choice < 0.8:
        return old * rng.randint(2, 50)                              # huge
    if choice < 0.9:
        return b"-" + old.strip()                                    # negative
    return old + b"0" * rng.randint(1, 30)                           # many digits


def mutate_keyword(rng, seed):
    if not seed.pairs:
        return None
    steering = [i for i, (k, _) in enumerate(seed.pairs) if STEERING.match(k.strip())]
    i = rng.choice(steering) if steering and rng.random() < 0.8 else rng.randrange(len(seed.pairs))
    key, old = seed.pairs[i]
    pairs = list(seed.pairs)
    pairs[i] = (key, hostile_value(rng, old))
    return f"keyword {key.decode('latin-1')}", assemble(seed, pairs, seed_data(seed))


def mutate_keyword_in_place(rng, seed):
    """Same-length value change: every offset stays valid and other segments stay put."""
    if not seed.pairs:
        return None
    steering = [(k, v) for k, v in seed.pairs if STEERING.match(k.strip()) and v]
    if not steering:
        return None
    key, old = rng.choice(steering)
    candidates = [v.encode("utf-8") for v in HOSTILE_VALUES]
    candidates = [v.ljust(len(old)) for v in candidates if 0 < len(v) <= len(old)]
    new = rng.choice(candidates)
    d = seed.delimiter
    needle = d + key + d + old + d
    at = seed.content.find(needle, seed.text[0])
    if at < 0 or at > seed.text[1]:
        return None
    start = at + len(d + key + d)
    return (f"in-place {key.decode('latin-1')}",
            seed.content[:start] + new + seed.content[start + len(old):])


def long_number(rng, digits=None):
    """A whole number of ``digits`` (default: one of LONG_DIGITS) digits, sometimes negative."""
    digits = digits or rng.choice(LONG_DIGITS)
    number = str(rng.randint(1, 9)).encode() + bytes(rng.choices(b"0123456789", k=digits - 1))
    return b"-" + number if rng.random() < 0.1 else number


def mutate_long_number(rng, seed, key=None, value=None, padding=None):
    """An absurdly long number in a numeric keyword (issue: int() of 5,000 digits was a traceback).

    ``key`` (default: a random one of the seed's numeric keywords, $BEGINDATA, $ENDDATA, the
    spillover count or $DATE's year) gets ``value``, or its old value behind ``padding`` zeros
    (which must read as the old value). Default: one time in five 4,301 or 5,000 zeros, else
    ``long_number``.
    """
    keys = [k.strip().upper() for k, _ in seed.pairs]
    numeric = [k for k in keys if NUMERIC.match(k) or k in SPILL_OR_DATE]
    if key is None:
        if not seed.pairs:
            return None
        key = rng.choice(sorted(set(numeric) | {b"$BEGINDATA", b"$ENDDATA"}))
    if value is None and padding is None:
        if rng.random() < 0.2:
            padding = rng.choice([4301, 5000])
        else:
            value = long_number(rng)
    length = "zero-padded" if padding else f"{len(value.lstrip(b'-'))} digits"
    label = f"long-number {key.decode('latin-1')} {length}"

    def padded(old):
        return b"0" * padding + old.strip()

    if key in (b"$BEGINDATA", b"$ENDDATA"):
        def offset_text(which, offset):
            if which != key:
                return b"%020d" % offset
            return b"%0*d" % (padding + 20, offset) if padding else value

        return label, assemble(seed, seed.pairs, seed_data(seed), offset_text)
    pairs = list(seed.pairs)
    index = keys.index(key) if key in keys else None
    old = pairs[index][1] if index is not None else b"1"
    if key == b"$DATE" and old.count(b"-") == 2:
        day, month, year = old.split(b"-")
        new = b"-".join([day, month, padded(year) if padding else value])
    elif key.lstrip(b"$") in (b"SPILL", b"SPILLOVER") and b"," in old:
        count, rest = old.split(b",", 1)
        new = (padded(count) if padding else value) + b"," + rest
    else:
        new = padded(old) if padding else value
    if index is None:
        pairs.append((key, new))
    else:
        pairs[index] = (pairs[index][0], new)
    return label, assemble(seed, pairs, seed_data(seed))


def mutate_drop_or_repeat(rng, seed):
    if not seed.pairs:
        return None
    pairs = list(seed.pairs)
    i = rng.randrange(len(pairs))
    key, value = pairs[i]
    if rng.random() < 0.5:
        del pairs[i]
        label = f"drop {key.decode('latin-1')}"
    else:
        pairs.append((key.lower() if rng.random() < 0.5 else key, hostile_value(rng, value)))
        label = f"repeat {key.decode('latin-1')}"
    return label, assemble(seed, pairs, seed_data(seed))


def mutate_duplicate_names(rng, seed):
    names = [i for i, (k, _) in enumerate(seed.pairs) if re.fullmatch(rb"\$P\d+N", k.strip(), re.I)]
    if len(names) < 2:
        return None
    pairs = list(seed.pairs)
    victim = pairs[rng.choice(names)][1]
    for i in rng.sample(names, rng.randint(2, len(names))):
        pairs[i] = (pairs[i][0], victim)
    return "duplicate names", assemble(seed, pairs, seed_data(seed))


def mutate_truncate(rng, seed):
    size = len(seed.content)
    marks = [0, 10, 57, 58, seed.text[0], seed.text[1], seed.text[1] + 1]
    if seed.data:
        marks += [seed.data[0], seed.data[1], seed.data[1] + 1, (seed.data[0] + seed.data[1]) // 2]
    cut = rng.choice(marks) + rng.randint(-3, 3) if rng.random() < 0.6 else rng.randrange(max(size, 1))
    cut = min(max(cut, 0), max(size - 1, 0))
    return "truncate", seed.content[:cut]


def mutate_non_ascii(rng, seed):
    content = bytearray(seed.content)
    start, end = seed.text if seed.text[1] > seed.text[0] else (0, min(len(content), 58))
    junk = [b"\xb2", b"\xc2\xb2", b"\xff", b"\xe2\x80\xa8", b"\x80", b"\xef\xbf\xbd", bytes([rng.randrange(128, 256)])]
    for _ in range(rng.randint(1, 8)):
        at = rng.randint(start, max(start, min(end, len(content) - 1)))
        piece = rng.choice(junk)
        content[at:at + len(piece)] = piece
    return "non-ASCII bytes", bytes(content[:len(seed.content)])


def mutate_header(rng, seed):
    content = bytearray(seed.content)
    if len(content) < 58:
        return None
    field_index = rng.randrange(6)
    value = rng.choice([b"        ", b"       0", b"\xc2\xb2\xc2\xb2\xc2\xb2\xc2\xb2", b"99999999", b"-1      ",
                        b"  1e3   ", b"%8d" % rng.randrange(0, len(content) + 100), b"\x00" * 8])
    content[10 + 8 * field_index:18 + 8 * field_index] = value[:8].ljust(8)
    if rng.random() < 0.2:
        content[:6] = rng.choice([b"FCS3.3", b"FCS\xc2\xb2.", b"fcs3.1", b"FCS2.0", b"FCS3.2"])
    return f"HEADER field {field_index}", bytes(content)


def mutate_bits(rng, seed):
    content = bytearray(seed.content)
    if not content:
        return None
    for _ in range(rng.randint(1, 16)):
        at = rng.randrange(len(content))
        content[at] ^= 1 << rng.randrange(8)
    return "bit flips", bytes(content)


def mutate_data_values(rng, seed):
    """Extreme event values: NaN/inf/1e30 in float data, all-ones in integers, constant or identical events."""
    import numpy as np

    data = seed_data(seed)
    if not data or not seed.widths or len(set(seed.widths)) != 1:
        return None
    width = seed.widths[0]
    n_channels = len(seed.widths)
    count = len(data) // (width * n_channels)
    if count == 0:
        return None
    little = b"1,2" in dict((k.strip().upper(), v) for k, v in seed.pairs).get(b"$BYTEORD", b"1")[:3]
    endian = "<" if little else ">"
    dtype = {"F": f"{endian}f4", "D": f"{endian}f8"}.get(seed.datatype, f"{endian}u{width}")
    if width not in (1, 2, 4, 8):
        return None
    values = np.frombuffer(data[:count * width * n_channels], dtype).reshape(count, n_channels).copy()
    kind = rng.choice(["extreme", "constant column", "identical events", "all zero", "time jump"])
    column = rng.randrange(n_channels)
    if kind == "extreme":
        rows = rng.sample(range(count), min(count, rng.choice([1, 3, count // 10 + 1, count])))
        extreme = rng.choice(EXTREME_FLOATS) if seed.datatype in ("F", "D") else np.iinfo(values.dtype).max
        values[rows, column] = extreme
    elif kind == "constant column":
        values[:, column] = values[0, column]
    elif kind == "identical events":
        values[:] = values[0]
    elif kind == "all zero":
        values[:] = 0
    else:
        values[count // 2:, column] = values[count // 2:, column] + (values.max() if values.size else 1)
    new = values.astype(dtype).tobytes() + data[count * width * n_channels:]
    return f"data {kind}", seed.content[:seed.data[0]] + new + seed.content[seed.data[1] + 1:]


def degenerate_tubes(folder, source=TEST_DATA / "low_fmo_stained.fcs"):
    """Write the issue's degenerate tubes (readable files, data that make no sense) into ``folder``.

    Each is the bundled tube with its events changed in one way; the TEXT is
    untouched except where the name says so. Returns {name: path}.
    """
    import numpy as np

    from cd125gate.io.fcs import read_fcs

    fcs = read_fcs(source, read_events=False)
    seed = load_seed(Path(source))
    n_channels = len(fcs.channels)
    names = fcs.channel_names()
    column = {name: names.index(name) for name in ("FSC-A", "SSC-A", "PE-A", "Time")}
    data = seed_data(seed)
    values = np.frombuffer(data, "<f4").reshape(fcs.event_count, n_channels)

    def changed(change):
        v = values.copy()
        change(v)
        return v

    kinds = {
        "identical_events": changed(lambda v: v.__setitem__(slice(None), v[0])),
        "all_zero": changed(lambda v: v.__setitem__(slice(None), 0)),
        "constant_ssc": changed(lambda v: v.__setitem__((slice(None), column["SSC-A"]), 5000)),
        "cd125_1e30": changed(lambda v: v.__setitem__((slice(None, None, 7), column["PE-A"]), 1e30)),
        "time_jump": changed(lambda v: v.__setitem__((slice(len(v) // 2, None), column["Time"]),
                                                     v[len(v) // 2:, column["Time"]] + 1e6)),
        "time_constant": changed(lambda v: v.__setitem__((slice(None), column["Time"]), 3)),
        "time_nan": changed(lambda v: v.__setitem__((slice(None), column["Time"]), np.nan)),
    }
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, v in kinds.items():
        content = seed.content[:seed.data[0]] + v.astype("<f4").tobytes() + seed.content[seed.data[1] + 1:]
        written[name] = folder / f"{name}.fcs"
        written[name].write_bytes(content)
    text_changes = {
        "timestep_zero": (b"/$TIMESTEP/0.01/", b"/$TIMESTEP/0.00/"),
        "cd125_range_1e308": (b"/$P6R/262144/", b"/$P6R/1e+308/"),
        "float_declared_integer": (b"/$DATATYPE/F/", b"/$DATATYPE/I/"),
    }
    for name, (old, new) in text_changes.items():
        written[name] = folder / f"{name}.fcs"
        written[name].write_bytes(seed.content.replace(old, new))
    # A FAILED reason quotes the path: mathtext in it reaches the failure figure.
    written["mathtext_in_path"] = folder / "corrupt$^{x$.fcs"
    written["mathtext_in_path"].write_bytes((TEST_DATA / "corrupt_stained.fcs").read_bytes())
    return written


MUTATIONS = [
    (mutate_keyword, 5), (mutate_keyword_in_place, 3), (mutate_drop_or_repeat, 2), (mutate_duplicate_names, 1),
    (mutate_long_number, 2),
    (mutate_truncate, 2), (mutate_non_ascii, 2), (mutate_header, 2), (mutate_bits, 2), (mutate_data_values, 3),
]


def mutants(count, seed_number):
    """``count`` (label, seed name, bytes) mutants, the same for the same seed number."""
    rng = random.Random(seed_number)
    seeds = [load_seed(path) for path in seed_files()]
    operators = [op for op, weight in MUTATIONS for _ in range(weight)]
    made = 0
    while made < count:
        seed = rng.choice(seeds)
        mutant = rng.choice(operators)(rng, seed)
        if mutant is None:
            continue
        label, content = mutant
        made += 1
        yield label, seed.path.relative_to(TEST_DATA).as_posix(), content


# --- Running one mutant ----------------------------------------------------------------------------

@contextlib.contextmanager
def time_limit(seconds):
    """Raise Timeout in the main thread after ``seconds`` (a hang or a quadratic loop)."""
    def expire(signum, frame):
        raise Timeout(f"over {seconds:.1f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_cli(argv, seconds):
    """(exit status, stdout, stderr, exception text or None) of ``cd125gate.cli.main(argv)`` in-process."""
    from cd125gate.cli import main

    out, err = io.StringIO(), io.StringIO()
    problem = None
    code = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            with time_limit(seconds):
                code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
        except Timeout as exc:
            problem = f"timeout: {exc}"
        except Exception as exc:  # noqa: BLE001 - the fuzzer's whole point is to catch anything
            problem = "traceback: " + where(exc)
    return code, out.getvalue(), err.getvalue(), problem


def where(exc):
    """'module.py:line in function: Type: message' for the innermost cd125gate frame of ``exc``."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "cd125gate" in f.filename]
    place = f"{Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}: " if frames else ""
    message = str(exc).replace("\n", " ")[:200]
    return f"{place}{type(exc).__name__}: {message}"


def strict_json(text):
    def refuse(name):
        raise ValueError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def one_error_line(stderr, *paths):
    """None when ``stderr`` is one line 'cd125gate: FILE: reason' (or 'FILE (WHERE): reason')
    naming one of ``paths`` (the mutant, or the partner tube whose own problem stopped the run)."""
    lines = stderr.splitlines()
    if len(lines) != 1:
        return f"{len(lines)} stderr lines: {stderr[:300]!r}"
    for path in paths:
        for prefix in (f"cd125gate: {path}: ", f"cd125gate: {path} ("):
            if lines[0].startswith(prefix) and len(lines[0]) > len(prefix):
                return None
    return f"stderr is not 'cd125gate: FILE: reason': {lines[0][:300]!r}"


def bound(size, base):
    """Seconds allowed for a file of ``size`` bytes: a base plus 2 s per 10 MB."""
    return base + 2.0 * size / 10_000_000


def check_inspect(path, size):
    code, out, err, problem = run_cli(["inspect", "--json", str(path)], bound(size, 10.0))
    if problem:
        return problem.split(":")[0], problem
    if code == 0:
        try:
            items = strict_json(out)
        except ValueError as exc:
            return "invalid-json", str(exc)
        if len(items) != 1 or err:
            return "contract", f"exit 0 with {len(items)} items and stderr {err[:200]!r}"
        return "ok-read", ""
    if code == 2:
        try:
            if strict_json(out) != []:
                return "contract", "exit 2 but stdout lists the file"
        except ValueError as exc:
            return "invalid-json", str(exc)
        line = one_error_line(err, path)
        return ("contract", line) if line else ("ok-refused", err.strip()[len(f"cd125gate: {path}: "):])
    return "contract", f"exit status {code}"


def check_read_stage(path, size):
    """What analyze does first: decode events, read the assay keywords ($DATE...), resolve the
    panel, run the plausibility checks."""
    from cd125gate.analysis import panel, plausibility
    from cd125gate.analysis.antigen import assay
    from cd125gate.errors import InputError
    from cd125gate.io.fcs import read_fcs
    from cd125gate.settings import load_settings

    settings = load_settings()
    try:
        with time_limit(bound(size, 10.0)):
            fcs = read_fcs(path)
            assay.from_keywords(fcs.keywords)
            markers = panel.resolve_markers(fcs.channels, replace(settings.panel, required=[]), path)
            plausibility.problems(fcs, markers, settings.panel.required)
    except InputError as exc:
        if "\n" in str(exc):
            return "contract", f"InputError over several lines: {str(exc)[:200]!r}"
        return "ok-refused", exc.problem
    except Timeout as exc:
        return "timeout", str(exc)
    except Exception as exc:  # noqa: BLE001
        return "traceback", where(exc)
    return "ok-read", ""


def partner(seed_name):
    """(argv for analyze, true CD125+ fraction or None) for a mutant of bundled tube ``seed_name``.

    A mutated stained tube is analysed with its own control; a mutated control
    with its own stained tube, so the mutant is the only thing that changed.
    """
    sample, _, role = Path(seed_name).stem.rpartition("_")
    truth = json.loads((TEST_DATA / "truth.json").read_text()).get(sample, {})
    fraction = truth.get("spec", {}).get("cd125_pos_fraction")
    if truth.get("spec", {}).get("corrupt"):
        fraction = None
    stained, control = TEST_DATA / f"{sample}_stained.fcs", TEST_DATA / f"{sample}_control.fcs"
    if role == "control" and stained.is_file():
        return (lambda path: [str(stained), "--control", str(path)]), None
    if role == "stained" and control.is_file():
        return (lambda path: [str(path), "--control", str(control)]), fraction
    return (lambda path: [str(path), "--control", str(GOOD_CONTROL)]), None


def check_analyze(path, size, out_dir, seed_name="low_fmo_stained.fcs"):
    from cd125gate import results

    inputs, truth = partner(seed_name)
    argv = inputs(path)
    code, out, err, problem = run_cli(["analyze", *argv, "--out", str(out_dir)], bound(size, 180.0))
    if problem:
        return problem.split(":")[0], problem
    if code == 2:
        line = one_error_line(err, *[a for a in argv if not a.startswith("--")])
        return ("contract", line) if line else ("ok-refused", err.strip())
    # The exit contract of analyze: 0 MET/NOT_MET, 3 REVIEW, 4 FAILED, 2 unreadable input.
    if code not in (0, 3, 4):
        return "contract", f"exit status {code}"
    result_path = out_dir / "result.json"
    if not result_path.is_file():
        return "contract", f"exit {code} without result.json (files: {sorted(p.name for p in out_dir.iterdir())})"
    try:
        strict_json(result_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        return "invalid-json", str(exc)
    try:
        result = results.load(result_path)
    except Exception as exc:  # noqa: BLE001 - InputError here means "schema-invalid"
        return "schema", str(exc)
    expected = {0: ("MET", "NOT_MET"), 3: ("REVIEW",), 4: ("FAILED",)}[code]
    if result.criterion not in expected:
        return "contract", f"exit {code} with criterion {result.criterion}"
    if truth is not None and (result.criterion == "MET" and truth < 0.5 - WRONG_MARGIN
                              or result.criterion == "NOT_MET" and truth > 0.5 + WRONG_MARGIN):
        return "wrong-answer", (f"{result.criterion} at {result.cd125_pos_fraction:.1%} but the simulated "
                                f"truth is {truth:.0%}")
    return f"ok-{result.criterion}", "; ".join(result.reasons)[:200]


def run_mutant(label, seed_name, content, workdir, index, analyze=False):
    """Every check on one mutant; yields Outcome objects."""
    path = workdir / f"mutant_{index}.fcs"
    path.write_bytes(content)
    before = hashlib.sha256(content).hexdigest()
    stages = [("inspect", check_inspect), ("read", check_read_stage)]
    if analyze:
        out_dir = workdir / f"out_{index}"
        stages.append(("analyze", lambda p, s: check_analyze(p, s, out_dir, seed_name)))
    for stage, check in stages:
        start = time.perf_counter()
        result, detail = check(path, len(content))
        yield Outcome(label, seed_name, stage, result, detail, time.perf_counter() - start)
    if hashlib.sha256(path.read_bytes()).hexdigest() != before:
        yield Outcome(label, seed_name, "input", "modified", "the mutant's bytes changed")
    path.unlink()
    if analyze:
        shutil.rmtree(workdir / f"out_{index}", ignore_errors=True)


def mutation_class(label):
    """'keyword $P3R' -> 'keyword', 'data constant column' -> 'data'."""
    return label.split(" ")[0]


def summarise(tally, elapsed):
    lines = [f"{sum(o.stage == 'inspect' for o in tally.outcomes)} mutants in {elapsed:.0f} s"]
    by_stage = Counter((o.stage, o.result if o.result in ("ok-read", "ok-refused") or not o.result.startswith("ok")
                        else "ok-result") for o in tally.outcomes)
    for stage in ("inspect", "read", "analyze", "input"):
        counts = {result: n for (s, result), n in by_stage.items() if s == stage}
        if counts:
            lines.append(f"  {stage:8} " + ", ".join(f"{result} {n}" for result, n in sorted(counts.items())))
    ok_kinds = Counter(o.result for o in tally.outcomes if o.stage == "analyze" and o.result.startswith("ok"))
    if ok_kinds:
        lines.append("  analyze outcomes: " + ", ".join(f"{k[3:]} {n}" for k, n in sorted(ok_kinds.items())))
    classes = Counter(mutation_class(o.mutation) for o in tally.outcomes if o.stage == "inspect")
    lines.append("  mutation classes: " + ", ".join(f"{k} {n}" for k, n in sorted(classes.items())))
    failures = tally.failures()
    if failures:
        by_class = Counter((o.stage, o.result, mutation_class(o.mutation)) for o in failures)
        lines.append("  FAILURES by stage/result/class: " + ", ".join(
            f"{s}/{r}/{c} {n}" for (s, r, c), n in sorted(by_class.items())))
    slowest = max(tally.outcomes, key=lambda o: o.seconds if o.stage != "analyze" else 0, default=None)
    if slowest:
        lines.append(f"  slowest inspect/read: {slowest.seconds:.2f} s ({slowest.mutation} of {slowest.seed})")
    return "\n".join(lines)


def fuzz(count, seed_number, analyze_count=0, keep=None, log=None):
    """Run ``count`` mutants (the first ``analyze_count`` readable ones also through analyze)."""
    import matplotlib

    matplotlib.use("Agg")
    tally = Tally()
    analyzed = 0
    with tempfile.TemporaryDirectory(prefix="cd125gate-fuzz-") as tmp:
        workdir = Path(tmp)
        for index, (label, seed_name, content) in enumerate(mutants(count, seed_number)):
            # Analyse mutants of the bundled tubes (a good control exists for them) until the quota is met.
            analyze = analyzed < analyze_count and "/" not in seed_name
            analyzed += analyze
            for outcome in run_mutant(label, seed_name, content, workdir, index, analyze):
                tally.add(outcome)
                if not outcome.result.startswith("ok"):
                    if keep is not None:
                        keep.mkdir(parents=True, exist_ok=True)
                        (keep / f"mutant_{seed_number}_{index}.fcs").write_bytes(content)
                        (keep / f"mutant_{seed_number}_{index}.txt").write_text(
                            f"{label} of {seed_name}\n{outcome.stage}: {outcome.result}: {outcome.detail}\n")
                    if log:
                        log(f"#{index} {label} of {seed_name}: {outcome.stage} {outcome.result}: "
                            f"{outcome.detail[:300]}")
    return tally


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fuzz", type=int, default=1000, metavar="N", help="number of mutants (default 1000)")
    parser.add_argument("--analyze", type=int, default=50, metavar="M",
                        help="also run this many mutants of bundled tubes through analyze (slow; default 50)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (the same seed, the same mutants)")
    parser.add_argument("--keep", type=Path, default=Path(tempfile.gettempdir()) / "cd125gate-fuzz-failures",
                        help="folder for failing mutants and what they broke (default: in the temp folder)")
    parser.add_argument("--max-memory-gb", type=float, default=4.0,
                        help="address-space limit for this process: a reader that allocates without "
                             "checking ends in MemoryError, counted as a failure")
    parser.add_argument("--degenerate", type=Path, metavar="DIR",
                        help="only write the issue's degenerate tubes into DIR (reproducers) and exit")
    args = parser.parse_args(argv)
    if args.degenerate:
        for name, path in degenerate_tubes(args.degenerate).items():
            print(f"{name}\t{path}")
        return 0
    import resource

    limit = int(args.max_memory_gb * 1024 ** 3)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    start = time.perf_counter()
    tally = fuzz(args.fuzz, args.seed, args.analyze, args.keep, log=lambda line: print(line, flush=True))
    print(summarise(tally, time.perf_counter() - start))
    return 1 if tally.failures() else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(main())
