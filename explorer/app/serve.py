"""`explorer serve`: the Gradio app, as a command. The app registers it (explorer/__main__.py adds it to the
command line), so the CLI never imports the app; gradio is imported only when the command runs."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

from explorer.core.errors import UserError

AUTH_ENV = 'EXPLORER_AUTH'  # user:password[,user:password...]


def register(sub) -> None:
    p = sub.add_parser('serve', help='start the app in the browser (compose, count, measure, compare, share)')
    p.add_argument(
        '--host',
        default='127.0.0.1',
        help='interface to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for the whole network)',
    )
    p.add_argument('--port', type=int, default=7860, help='port (default 7860)')
    p.add_argument('--share', action='store_true', help='also open a public gradio.live link (off unless asked)')
    p.add_argument(
        '--auth-file',
        metavar='FILE',
        default=None,
        help=f'ask for a login: FILE holds one user:password per line (or set {AUTH_ENV}=user:password,...)',
    )
    p.set_defaults(func=cmd_serve)


def parse_credentials(text: str, where: str, lines: bool = True) -> list[tuple[str, str]]:
    """'user:password' entries -> [(user, password), ...]: one per line (a file: blank lines and '#' comments
    skipped, each line's surrounding whitespace ignored, everything after its first ':' the password, commas
    included), or comma-separated (`lines=False`: EXPLORER_AUTH). A user named twice is refused."""
    pairs, seen = [], {}
    # lines end at \n, \r\n or \r only: str.splitlines() also breaks at \x85, \u2028, \x0c and others, so one
    # line 'alice:s3cret<U+2028>admin:admin' made a second login
    entries = text.replace('\r\n', '\n').replace('\r', '\n').split('\n') if lines else text.split(',')
    unit = 'line' if lines else 'entry'
    for n, entry in enumerate((e.strip() for e in entries), start=1):
        if not entry or (lines and entry.startswith('#')):
            continue
        user, sep, password = entry.partition(':')
        if not sep or not user or not password:
            raise UserError(f'{where}: {unit} {n} is not user:password')
        if user in seen:
            raise UserError(f'{where}: {unit} {n} names user {user!r} again ({unit} {seen[user]}); one password each')
        seen[user] = n
        pairs.append((user, password))
    if not pairs:
        raise UserError(f'{where}: no user:password entries')
    return pairs


def credentials(auth_file: str | None, environ=None) -> list[tuple[str, str]] | None:
    """Logins from --auth-file, else from EXPLORER_AUTH, else None (no login asked)."""
    env = os.environ if environ is None else environ
    if auth_file:
        path = Path(auth_file)
        if not path.is_file():
            raise UserError(f'--auth-file: {auth_file!r} ' + ('is not a file' if path.exists() else 'does not exist'))
        try:
            text = path.read_text(encoding='utf-8-sig')  # a byte-order mark (Notepad) is not part of a name
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f'--auth-file: cannot read {auth_file!r}: {e}') from None
        return parse_credentials(text, f'--auth-file {auth_file}')
    if env.get(AUTH_ENV):
        return parse_credentials(env[AUTH_ENV], AUTH_ENV, lines=False)
    return None


def is_loopback(host: str) -> bool:
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_address(host: str, port: int) -> None:
    """host:port can be listened on: resolved and bound once before the app is built (gradio's own error, after
    the build, for a name that does not resolve, an address of another machine or a port in use alike, is
    "Cannot find empty port"). Every address the name resolves to is tried, as the server binds them all; an
    IPv6 address may be written in brackets, as gradio takes it."""
    import errno
    import socket

    bare = host[1:-1] if host.startswith('[') and host.endswith(']') else host
    try:
        found = socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        raise UserError(
            f'--host {host!r} does not resolve to an address ({getattr(e, "strerror", None) or e})'
        ) from None
    for family, kind, proto, _, addr in dict.fromkeys((f, k, p, '', a) for f, k, p, _, a in found):
        try:
            with socket.socket(family, kind, proto) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
                s.bind(addr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                in_use = f'--port {port}: {host}:{port} is in use (another server?); give another --port'
                raise UserError(in_use) from None
            if e.errno == errno.EACCES and port < 1024:
                raise UserError(
                    f'--port {port}: ports below 1024 need administrator rights here; give a port from 1024 up'
                ) from None
            raise UserError(
                f'--host {host!r} ({addr[0]}) is not an address of this machine ({e.strerror or e})'
            ) from None


def _stop_on_sigterm() -> None:
    """SIGTERM (`kill`, systemd, docker stop) stops the server as Ctrl-C does: gradio closes it and the process
    exits normally, so its exit handlers run (the downloads folder in the temporary directory is removed; by
    default SIGTERM ended the process on the spot and left one folder behind per start)."""
    import signal
    import threading

    def stop(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def cmd_serve(args) -> int:
    _stop_on_sigterm()  # first: importing the app makes the downloads folder that a plain SIGTERM would leave
    from explorer.app.context import launch_kwargs
    from explorer.app.main import build_demo

    if not 1 <= args.port <= 65535:
        raise UserError(f'--port {args.port} is out of range; allowed [1, 65535]')
    check_address(args.host, args.port)
    auth = credentials(args.auth_file)
    if auth is None and (args.share or not is_loopback(args.host)):
        reach = 'a public gradio.live link' if args.share else f'{args.host} (other machines can reach it)'
        print(
            f'warning: serving on {reach} without a login; anyone who can reach it can use it. '
            f'Give --auth-file FILE or set {AUTH_ENV}=user:password.',
            file=sys.stderr,
        )
    demo = build_demo()
    try:
        demo.launch(server_name=args.host, server_port=args.port, share=args.share, auth=auth, **launch_kwargs())
    except OSError as e:
        raise UserError(f'cannot listen on {args.host}:{args.port}: {e.strerror or e}') from None
    return 0
