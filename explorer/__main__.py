"""The `explorer` command (and `python -m explorer`): the command groups of explorer.cli plus the app's
`serve`. This module sits above both layers, so neither imports the other."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from explorer.app.serve import register as register_serve
    from explorer.cli import main as cli_main

    return cli_main(argv, extra=(register_serve,))


if __name__ == '__main__':
    sys.exit(main())
