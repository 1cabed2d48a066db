"""`explorer` command line. Each capability registers its sub-commands from its own module in
`explorer.cli`, so adding a command never touches this file's logic, only the list below."""

from __future__ import annotations

import argparse
import importlib
import sys

from explorer.core.errors import UserError
from explorer.core.spec import SpecError

# module path of each command group; each module has `register(subparsers)`
COMMAND_MODULES = [
    'explorer.cli.core',
    'explorer.cli.counting',
    'explorer.cli.predict',
    'explorer.cli.train',
    'explorer.cli.latency',
    'explorer.cli.export',
    'explorer.cli.search',
]


def build_parser(extra: tuple = ()) -> argparse.ArgumentParser:
    """The parser of every command group, plus `extra` register functions (the app adds `serve`)."""
    parser = argparse.ArgumentParser(
        prog='explorer',
        description='MetaFormer Explorer: compose, count, measure, explain and compare MetaFormer vision networks.',
    )
    from explorer import __version__

    parser.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for register in extra:
        register(sub)
    return parser


def main(argv: list[str] | None = None, extra: tuple = ()) -> int:
    parser = build_parser(extra)
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
    except OSError as e:  # a path that is a folder, not a folder, not writable, unreadable: the user's to fix
        print(f'error: {e}', file=sys.stderr)
        return 2
