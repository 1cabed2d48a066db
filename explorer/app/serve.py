"""`explorer serve`: the Gradio app, as a command. The app registers it (explorer/__main__.py adds it to the
command line), so the CLI never imports the app; gradio is imported only when the command runs."""

from __future__ import annotations

from explorer.core.errors import UserError


def register(sub) -> None:
    p = sub.add_parser('serve', help='start the app in the browser (compose, count, measure, compare, share)')
    p.add_argument(
        '--host',
        default='127.0.0.1',
        help='interface to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for the whole network)',
    )
    p.add_argument('--port', type=int, default=7860, help='port (default 7860)')
    p.add_argument('--share', action='store_true', help='also open a public gradio.live link (off unless asked)')
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from explorer.app.context import launch_kwargs
    from explorer.app.main import build_demo

    if not 1 <= args.port <= 65535:
        raise UserError(f'--port {args.port} is out of range; allowed [1, 65535]')
    demo = build_demo()
    try:
        demo.launch(server_name=args.host, server_port=args.port, share=args.share, **launch_kwargs())
    except OSError as e:
        raise UserError(f'cannot listen on {args.host}:{args.port}: {e}') from None
    return 0
