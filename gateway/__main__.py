"""`python -m gateway ...`: the command tree is gateway/cli/tree.py."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from gateway.cli.tree import main as run

    return run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
