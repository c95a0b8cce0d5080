"""Check a batch's screening.tsv against the expected criteria of test_data/truth.json.

Used by CI after it runs the README's first command as a newcomer would (no test
extra): every bundled sample must be in the table with the criterion its truth
expects. Standard library only, so that it runs before anything is installed.

    python3 scripts/check_bundled_run.py results/screening.tsv test_data/truth.json
"""

import csv
import json
import sys


def mismatches(screening_tsv, truth_json):
    """Lines saying which bundled samples are missing or got another criterion."""
    with open(screening_tsv, newline="", encoding="utf-8") as handle:
        got = {row["sample_id"]: row["criterion"] for row in csv.DictReader(handle, delimiter="\t")}
    with open(truth_json, encoding="utf-8") as handle:
        truth = json.load(handle)
    lines = []
    for sample_id, case in sorted(truth.items()):
        expected = case["expected_criterion"]
        if sample_id not in got:
            lines.append(f"{sample_id}: missing from {screening_tsv} (expected {expected})")
        elif got[sample_id] != expected:
            lines.append(f"{sample_id}: {got[sample_id]}, expected {expected}")
    return lines


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    lines = mismatches(*argv)
    for line in lines:
        print(f"bundled batch: {line}", file=sys.stderr)
    if not lines:
        print(f"bundled batch: every sample of {argv[1]} has its expected criterion")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
