"""``python -m producer``: subcommands are added by the producer issue (#5)."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m producer", description="poolq producer")
    parser.parse_args(argv)
    parser.print_help()
    return 0
