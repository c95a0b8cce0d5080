"""Every third-party module cd125gate imports is a declared runtime dependency.

A newcomer installs without the test extra (README's first command). A module that
arrives only through the test extra (threadpoolctl came with scikit-learn) or through
another package's dependencies (Pillow via matplotlib, lxml via FlowKit) works in CI
and breaks for them, or breaks the day that other package drops it. Two checks:

- what the code says: every import in ``src/cd125gate`` and the workflow's rules names
  a declared dependency (or the standard library);
- what a run needs: a bundled pair analysed, screened, reported, signed out and written
  as a workspace in a fresh process where every module outside the declared
  dependencies and what they in turn require (at run time, not their extras) cannot
  be imported, as on a newcomer's install.
"""

import ast
import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parents[1]
TEST_DATA = ROOT / "test_data"


def runtime_requirements(dist):
    """The distributions ``dist`` requires at run time (no extras), canonical names."""
    names = set()
    for line in metadata.requires(dist) or ():
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            names.add(canonicalize_name(req.name))
    return names


def with_their_requirements(names):
    """``names`` and everything they require at run time, transitively."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            todo.extend(runtime_requirements(name) - seen)
        except metadata.PackageNotFoundError:
            pass  # a requirement for another platform or Python, not installed here
    return seen


def distributions_of(modules):
    """Top-level module -> its distributions (canonical names); stdlib and our own left out."""
    owners = metadata.packages_distributions()
    found = {}
    for module in modules:
        if module in sys.stdlib_module_names or module in ("cd125gate", "__main__") or module.startswith("_"):
            continue
        found[module] = {canonicalize_name(d) for d in owners.get(module, ())}
    return found


def undeclared(modules, allowed):
    """Modules none of whose distributions is in ``allowed`` (unknown ones too)."""
    return sorted(m for m, dists in distributions_of(modules).items() if not dists & allowed)


DECLARED = runtime_requirements("cd125gate")


def imported_in_source():
    """Top-level names of every import in the package and in the workflow's rules."""
    names = set()
    for path in (ROOT / "src" / "cd125gate").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    # Rules files are Python with Snakemake's keywords: their import lines are plain Python.
    line = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))", re.M)
    for path in [ROOT / "workflow" / "Snakefile", *(ROOT / "workflow" / "rules").glob("*.smk")]:
        for from_name, import_name in line.findall(path.read_text()):
            names.add((from_name or import_name).split(".")[0])
    return names


def test_every_import_in_the_code_is_a_declared_dependency():
    assert undeclared(imported_in_source(), DECLARED) == []


def test_the_check_names_a_module_that_only_the_test_extra_brings():
    # The case that broke the README's first command: threadpoolctl came with scikit-learn.
    assert undeclared({"threadpoolctl", "numpy", "json"}, {"numpy"}) == ["threadpoolctl"]
    assert undeclared({"PIL"}, {"matplotlib"}) == ["PIL"]
    assert undeclared({"PIL"}, with_their_requirements({"matplotlib"})) == []
    assert undeclared({"no_such_module_anywhere"}, DECLARED) == ["no_such_module_anywhere"]


DRIVER = """
import json, sys
from cd125gate.cli import main
stained, control, out, blocked = sys.argv[1:5]
blocked = set(json.loads(blocked))


class NotInstalledForANewcomer:
    # Modules of distributions a plain install lacks: imported, they fail as they would there.
    # Optional imports of our dependencies (pyarrow tries cloudpickle) then fall back as there.
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in blocked:
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)
        return None


sys.meta_path.insert(0, NotInstalledForANewcomer())
sample = out + '/samples/s1'
assert main(['analyze', stained, '--control', control, '--out', sample, '--sample-id', 's1',
             '--quiet']) == 0
assert main(['screening', sample + '/result.json', '--tsv', out + '/screening.tsv',
             '--json', out + '/screening.json']) == 0
assert main(['report', '--results-dir', out + '/samples', '--out', out + '/report.html',
             '--screening', out + '/screening.json']) == 0
assert main(['signout', '--screening', out + '/screening.json', '--results-dir', out + '/samples']) == 0
assert main(['workspace', sample + '/result.json', '--out', out + '/batch.wsp']) == 0
print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))
"""


@pytest.mark.slow
def test_a_run_needs_only_declared_dependencies_and_what_they_require(tmp_path):
    allowed = with_their_requirements(DECLARED)
    installed = metadata.packages_distributions()
    blocked = sorted(undeclared(installed, allowed))
    assert "sklearn" in blocked  # the test extra is installed here: the block is real
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(TEST_DATA / "high_fmo_stained.fcs"),
         str(TEST_DATA / "high_fmo_control.fcs"), str(tmp_path), json.dumps(blocked)],
        capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert {"numpy", "matplotlib", "flowkit", "PIL"} <= loaded  # the run did what it says
    assert json.loads((tmp_path / "samples" / "s1" / "result.json").read_text())["criterion"] == "MET"
