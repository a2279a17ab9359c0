"""The verdict on the DBA family (issue 13) from finished comparisons: every method pooled over seeds with its
intervals and cost, and each DBA-family variant checked against the targets (dba/compare/verdict.py).

    python scripts/verdict.py runs/study-finance runs/study-medicine            # markdown to stdout
    python scripts/verdict.py runs/study-finance runs/study-medicine --json FILE
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dba.compare.verdict import verdict, verdict_markdown  # noqa: E402
from dba.errors import DBAError  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", help="comparison folders (dba compare -o DIR)")
    p.add_argument("--json", metavar="FILE", help="also write the verdict as JSON")
    a = p.parse_args(argv)
    try:
        v = verdict(a.folders)
    except DBAError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(verdict_markdown(v), end="")
    if a.json:
        v = {**v, "points": {d: {k: dataclasses.asdict(q) for k, q in by.items()} for d, by in v["points"].items()}}
        Path(a.json).write_text(json.dumps(v, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
