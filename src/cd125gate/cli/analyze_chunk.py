"""`cd125gate analyze-chunk`: one workflow job analyses a chunk of samples, paying imports once.

The subcommand's arguments; the chunk loop is ``chunk.run_chunk``, imported
only when the subcommand runs.
"""

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="chunk spec (JSON): per sample, its log file and its `cd125gate analyze` "
                                     "arguments")
    parser.add_argument("--threads", type=int, help="passed to each sample's analysis (`analyze --threads`)")


def run(args: argparse.Namespace) -> int:
    from cd125gate.cli import analyze as cli_analyze
    from cd125gate.results.chunk import run_chunk

    return run_chunk(args.spec, cli_analyze.add_arguments, cli_analyze.run, args.threads)
