"""The `fairsearch` command: parse arguments, call one function, map user errors to exit code 2."""

from __future__ import annotations

import argparse
import logging
import sys

from fairsearch.errors import FairsearchError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fairsearch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (or resume) a sweep")
    run.add_argument("--space", required=True, help="search-space YAML file")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            print("fairsearch run: not yet implemented")
            return 1
    except FairsearchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
