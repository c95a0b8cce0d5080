"""The `cd125gate` command.

Each subcommand lives in its own module, which exposes ``add_arguments(parser)``
and ``run(args) -> int``. Modules are imported only when their subcommand runs,
so that `cd125gate inspect` does not pay for matplotlib.
"""

import argparse
import importlib
import os
import sys

from . import __version__
from .errors import InputError

SUBCOMMANDS = {
    "inspect": ("cd125gate.fcsinfo", "summarise FCS files (version, instrument, channels, spillover)"),
    "panel": ("cd125gate.panel_command", "show which channel carries which marker, and what is missing"),
    "simulate": ("cd125gate.simulate", "write simulated stained/control tubes with known truth"),
    "analyze": ("cd125gate.analyze_command", "analyse one stained tube (and its control) into a result"),
    "analyze-chunk": ("cd125gate.chunk", "analyse a chunk of samples (workflow jobs): imports paid once, "
                                         "one forked process per sample"),
    "screening": ("cd125gate.screening", "collect per-sample results into screening.tsv/json"),
    "report": ("cd125gate.report", "build the batch review page report.html"),
    "signout": ("cd125gate.signout", "write each sample's one-page sign-out record (signout.pdf)"),
    "workspace": ("cd125gate.workspace", "write a FlowJo 10 workspace (batch.wsp) of the batch's gates"),
    "regate": ("cd125gate.regate", "re-gate one sample with edited gates (Gating-ML) into reviewed_result.json"),
    "validate-sheet": ("cd125gate.samplesheet", "check a sample sheet before a run"),
    "sheet": ("cd125gate.pairing", "write a sample sheet for a folder of tubes, pairing stained and control"),
}


def build_parser(argv):
    parser = argparse.ArgumentParser(prog="cd125gate", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cd125gate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        # Only the chosen subcommand's module is imported; `--help` imports them all.
        if wanted is None or name == wanted:
            importlib.import_module(module_name).add_arguments(sp)
            sp.set_defaults(_module=module_name)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        return importlib.import_module(args._module).run(args)
    except InputError as exc:
        print(f"cd125gate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`| head`): not an error of ours. Point
        # stdout at /dev/null so that Python's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
