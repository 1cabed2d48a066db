"""`explorer` command line. Each capability registers its sub-commands from its own module in
`explorer.commands`, so adding a command never touches this file's logic, only the list below."""
from __future__ import annotations

import argparse
import importlib
import sys

from .spec import SpecError

# module path of each command group; each module has `register(subparsers)`
COMMAND_MODULES = [
    'explorer.commands.core',
    'explorer.commands.counting',
    'explorer.commands.predict',
    'explorer.commands.train',
    'explorer.commands.serve',
]


class UserError(Exception):
    """An error caused by the user's input: printed as one clear message, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='explorer', description='MetaFormer Explorer: compose, count, measure, '
                                     'explain and compare MetaFormer vision networks.')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # that capability is not installed in this tree
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (SpecError, UserError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        return 0


if __name__ == '__main__':
    sys.exit(main())
