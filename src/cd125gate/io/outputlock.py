"""One run at a time per output folder.

Snakemake's own lock lives in its working directory, so two checkouts (two working
directories) writing into one output folder would both run and mix their results.
This lock lives in the output folder: a file naming the run that holds it (host, pid
with its start time, working directory). The workflow takes it in `onstart` (not for
-n, --unlock or a run with nothing to do) and drops it in `onsuccess`/`onerror`; a
killed run's lock is taken over once its process is gone.
"""

from __future__ import annotations

import json
import os
import socket
import sys

LOCK_NAME = ".cd125gate.lock"
# Attempts to create the lock; each failed one has set a gone run's lock aside.
ATTEMPTS = 3


class OutdirLocked(Exception):
    """The output folder cannot be held by this run; the message is one line for the user."""


def lock_path(outdir: str | os.PathLike[str]) -> str:
    return os.path.join(os.fspath(outdir), LOCK_NAME)


def take(outdir: str | os.PathLike[str]) -> None:
    """Hold ``outdir`` for this process, or raise OutdirLocked naming the run that holds it."""
    outdir = os.fspath(outdir)
    try:
        _claim(outdir)
    except OSError as exc:  # a read-only or full file system: one line, no traceback
        raise OutdirLocked(f"{outdir}: cannot write the output folder: {exc.strerror or exc}") from exc


def release(outdir: str | os.PathLike[str]) -> None:
    """Drop this process's lock on ``outdir`` (never another run's)."""
    path = lock_path(outdir)
    if read_holder(path) == this_process():
        os.unlink(path)


def this_process() -> dict:
    """Who holds the lock: host, pid (with its start time, against pid reuse), working dir."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "start": process_start(os.getpid()),
        "workdir": os.getcwd(),
    }


def process_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (None where /proc cannot tell)."""
    try:
        with open(os.path.join(os.sep, "proc", str(pid), "stat")) as handle:
            # Field 22; the command name (field 2) may hold spaces, so split after it.
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def read_holder(path: str | os.PathLike[str]) -> dict:
    """The lock's holder as written, or {} when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as handle:
            holder = json.load(handle)
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def holder_is_gone(holder: dict) -> bool:
    """True only when the holder ran on this host and its process no longer exists."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False  # another host's process cannot be checked from here
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, under another user
    start = process_start(holder["pid"])
    return None not in (start, holder.get("start")) and start != holder["start"]


def describe(holder: dict) -> str:
    return (
        f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, "
        f"working directory {holder.get('workdir', '?')}"
    )


def _claim(outdir: str) -> None:
    os.makedirs(outdir, exist_ok=True)
    path = lock_path(outdir)
    mine = this_process()
    for _ in range(ATTEMPTS):
        try:
            # O_EXCL: of two runs starting together exactly one creates the file.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = read_holder(path)
            if not holder_is_gone(holder):
                raise OutdirLocked(
                    f"{outdir}: in use by another run ({describe(holder)}); "
                    f"wait for it to end, or if no such run is going, remove {path}"
                ) from None
            if _set_aside(path, holder):
                print(
                    f"cd125gate: {outdir}: taking over the lock of a run that is gone ({describe(holder)})",
                    file=sys.stderr,
                )
            continue
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(mine, handle)
        except OSError:
            os.unlink(path)  # an empty lock would hold the folder for no one
            raise
        return
    raise OutdirLocked(f"{outdir}: could not take {path}; another run is starting")


def _set_aside(path: str, stale: dict) -> bool:
    """Remove the stale lock ``stale`` at ``path``, unless another run replaced it meanwhile.

    A rename is atomic: of two runs taking over together, one moves the stale lock
    away; should it have moved a fresh lock instead, that is put back.
    """
    aside = f"{path}.{os.getpid()}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False  # the other run took it over first; try to create ours again
    if read_holder(aside) != stale:
        try:
            os.link(aside, path)  # put it back, unless yet another lock is there
        except OSError:
            pass
        os.unlink(aside)
        return False
    os.unlink(aside)
    return True
