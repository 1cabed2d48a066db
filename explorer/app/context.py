"""What every tab shares: the AppContext handed to each tab builder, the page style, launch settings and how
errors are shown. Tabs import this module; explorer.app.main imports the tabs (no cycle)."""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import html
import inspect
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from explorer.core.files import atomic_write
from explorer.core.spec import SpecError

CSS = """
.gradio-container {max-width: 1400px !important}
#mfx-header h1 {margin: 0 0 2px 0; font-size: 1.45rem}
#mfx-header p {margin: 0; color: var(--body-text-color-subdued)}
.mfx-cards {display: flex; gap: 10px; flex-wrap: wrap}
.mfx-card {flex: 1 1 120px; border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px 12px;
           background: var(--background-fill-secondary)}
.mfx-card .k {font-size: 12px; color: var(--body-text-color-subdued)}
.mfx-card .v {font-size: 1.5rem; font-weight: 650; line-height: 1.25}
.mfx-card .x {font-size: 11px; color: var(--body-text-color-subdued); font-variant-numeric: tabular-nums}
.mfx-note {font-size: 12px; color: var(--body-text-color-subdued); margin-top: 6px}
#mfx-verified {color: var(--body-text-color)}
body.mfx-restoring #mfx-compose {opacity: .5; pointer-events: none; transition: opacity .15s}
body.mfx-restoring .tabitem:not(:has(#mfx-compose)) {opacity: .5; pointer-events: none; transition: opacity .15s}
.mfx-error {border: 1px solid #fca5a5; background: #fef2f2; color: #991b1b; border-radius: 8px;
            padding: 6px 12px !important; font-size: 13px}
.mfx-error p, .mfx-error li {color: #991b1b !important}
table.mfx-table {border-collapse: collapse; width: 100%; font-size: 12px; font-variant-numeric: tabular-nums}
table.mfx-table th, table.mfx-table td {padding: 3px 6px; border-bottom: 1px solid var(--border-color-primary);
           text-align: right; white-space: nowrap}
table.mfx-table th {font-weight: 600; color: var(--body-text-color)}
/* a narrow window packs the per-stage table tighter, then scrolls it: its MACs column is never cut off */
#mfx-table, #mfx-history-box, #mfx-diff-box {overflow-x: auto !important}
/* the Measure history: long headers and the stamp (with its busy-CPU warning) wrap instead of running off the page */
#mfx-history th {white-space: normal}
#mfx-history td:last-child {white-space: normal; min-width: 200px}
@media (max-width: 1200px) {
  table.mfx-table {font-size: 11px}
  table.mfx-table th, table.mfx-table td {padding: 3px 2px}
}
table.mfx-table td:first-child, table.mfx-table th:first-child, table.mfx-table td.l {text-align: left}
.mfx-tight, .mfx-stage {flex-wrap: nowrap !important; gap: 6px !important}
.mfx-stage {align-items: center; border: 1px solid var(--border-color-primary); border-radius: 6px;
            padding: 2px 4px; background: var(--background-fill-secondary)}
/* !important: Gradio's min(520px, 100%) on the form pushed a stage's remove button off a phone's screen */
.mfx-stage > *, .mfx-stage .form {min-width: 0 !important}
.mfx-stage .form, .mfx-tight .form {flex-wrap: nowrap !important; align-items: flex-start; background: transparent;
            border: none !important; gap: 6px !important; box-shadow: none !important}
.mfx-stage .container, .mfx-tight .container {height: auto !important; min-height: 0 !important}
.mfx-stage .block, .mfx-tight .block {min-height: 0 !important; padding: 2px 4px !important; border: none !important;
            box-shadow: none !important; background: transparent !important}
.mfx-stage label.container, .mfx-tight label.container {display: block}
.mfx-stage input[type=number], .mfx-tight input[type=number], .mfx-tight input[type=text] {padding: 5px 8px !important}
.mfx-stage label span, .mfx-tight label span {margin-bottom: 3px !important; white-space: nowrap; overflow: hidden;
            text-overflow: ellipsis}
.mfx-stage .block:has(input[type=checkbox]) {min-width: 92px !important; align-self: center}
.mfx-stage .block:has(input[type=checkbox]):last-of-type {min-width: 112px !important}
.mfx-stage-title {flex: 0 0 34px !important; min-width: 34px !important; align-self: center}
.mfx-stage-title div {font-weight: 700; font-size: 13px; text-align: center}
.mfx-remove {flex: 0 0 30px !important; min-width: 30px !important; max-width: 30px; align-self: center}
/* six stages on screen: no seventh can be added; one: it cannot be removed (hidden stage rows are not in the page) */
body:has(#mfx-stage-6) #mfx-add,
body:not(:has(#mfx-stage-2)) #mfx-stage-1 .mfx-remove {opacity: .4; pointer-events: none}
#mfx-scratch {max-height: 40px; align-self: center; white-space: nowrap; font-size: 14px}
/* a phone: the preset list gets the whole line (its names are the information), the button the next */
@media (max-width: 560px) {
  .mfx-tight:has(#mfx-scratch) {flex-wrap: wrap !important}
  .mfx-tight:has(#mfx-scratch) > * {flex: 1 1 100% !important}
}
/* compare */
.mfx-compare-bar {align-items: flex-end; flex-wrap: wrap !important}
#mfx-compare-csv {align-self: center; white-space: nowrap}
#mfx-families .wrap {gap: 4px 6px}
#mfx-families label {padding: 4px 8px !important}
#mfx-history-box {overflow-x: auto}
#mfx-history td:last-child {white-space: normal; min-width: 240px}
/* compose */
#mfx-figs {position: sticky; top: 4px; align-self: flex-start; max-height: calc(100vh - 8px); overflow-y: auto;
           overscroll-behavior: contain; flex-wrap: nowrap !important}
#mfx-figs > * {flex-shrink: 0}
#mfx-compose {align-items: flex-start}
.gradio-container:has(#mfx-figs) {overflow: clip !important}  /* hidden would stop the figures being sticky */
#mfx-field-errors {display: none}
.mfx-stage .form, .mfx-globals .form {flex-wrap: wrap !important; align-items: flex-end !important; row-gap: 2px}
.mfx-stage .block:has(input[type=number]), .mfx-globals .block:has(input[type=number]) {min-width: 68px !important}
.mfx-stage .block:has(input[role=combobox]) {min-width: 76px !important}
.mfx-stage .block:first-child:has(input[role=combobox]) {min-width: 112px !important}
.mfx-stage .block:has(input[type=checkbox]) {min-width: 86px !important}
.mfx-globals .block:has(input[role=combobox]) {min-width: 100px !important}
.mfx-globals #mfx-name {min-width: 150px !important}
.mfx-globals #mfx-norm {min-width: 150px !important}
.mfx-stage input[type=number], .mfx-globals input[type=number] {font-variant-numeric: tabular-nums}
.mfx-stage label span {white-space: normal !important; overflow-wrap: anywhere; line-height: 1.15}
.mfx-invalid {position: relative; overflow: visible !important; z-index: 20}
.mfx-invalid input, .mfx-invalid textarea, .mfx-invalid .wrap {outline: 2px solid #dc2626 !important;
           outline-offset: -1px; background: #fef2f2 !important}
.mfx-stage.mfx-invalid {border-color: #dc2626 !important}
.mfx-stage:has(.mfx-invalid), .mfx-stage .form:has(.mfx-invalid), .mfx-globals .form:has(.mfx-invalid),
.mfx-globals:has(.mfx-invalid) {overflow: visible !important; z-index: 20}
.mfx-stage:has(.mfx-field-msg), .mfx-globals:has(.mfx-field-msg) {margin-bottom: 34px}
.mfx-field-msg {position: absolute; top: calc(100% - 2px); left: 2px; min-width: 160px; max-width: 260px;
           z-index: 30; background: #fef2f2; color: #991b1b; border: 1px solid #fca5a5; border-radius: 4px;
           padding: 2px 6px; font-size: 12px; line-height: 1.3; white-space: normal; box-shadow: 0 1px 3px #0002}
#mfx-stale {position: relative; height: 0; overflow: visible; z-index: 10}
.mfx-stale {position: absolute; top: 2px; left: 0; right: 0; border: 1px solid #f59e0b; background: #fffbeb;
           color: #92400e; border-radius: 6px; padding: 4px 10px; font-size: 12px}
.gradio-container:has(.mfx-stale) #mfx-chart, .gradio-container:has(.mfx-stale) #mfx-diagram,
.gradio-container:has(.mfx-stale) #mfx-table {opacity: 0.4; filter: grayscale(0.6)}
.gradio-container:has(.mfx-stale) #mfx-diagram {outline: 2px dashed #f59e0b; outline-offset: 2px}
.mfx-toolbar {align-items: center; flex-wrap: wrap !important}  /* a phone: the status takes its own line */
.mfx-toolbar #mfx-pin-status {flex: 1 1 200px; margin: 0}
.mfx-toolbar #mfx-pin-status p {margin: 0}
.mfx-notice {border: 1px solid #93c5fd; background: #eff6ff; border-radius: 6px; align-items: center;
           padding: 0 6px}
.mfx-notice p {margin: 0}
#mfx-pins .wrap {gap: 4px 10px}
/* train */
#mfx-runs [aria-label="Static column"] {display: none}
#mfx-runs .header-cell, #mfx-runs .body-cell {font-variant-numeric: tabular-nums}
#mfx-runs-use {align-self: center}
/* predict */
#mfx-predict-image img, .mfx-pixelated img {image-rendering: pixelated; width: 100% !important;
            height: 100% !important; object-fit: contain}
#mfx-predict-examples img {image-rendering: pixelated}
.mfx-trust-warning {border: 1px solid #f59e0b; background: #fffbeb; color: #92400e; border-radius: 8px;
            padding: 6px 12px; font-size: 13px; font-weight: 600; margin: 4px 0}
.mfx-trust {font-size: 13px}
#mfx-click-js {display: none}
"""
THEME = gr.themes.Default(primary_hue='blue', radius_size='sm', spacing_size='sm', text_size='sm')


@dataclass
class AppContext:
    """What a tab builder gets: the shared state and how to push a spec into the composer.

    spec: gr.State with the composer's last valid spec dict; report: its analytic CostReport dict.
    pins: gr.State with the designs the visitor pinned to compare, a list of {'name': str, 'spec': dict}.
    load_spec(trigger, fn, inputs, outputs=(), select=False): set by the Compose tab. Wires `trigger` (an event
    listener such as `button.click`) to one answer outside the queue that shows and counts, in the composer, the
    design fn(*inputs) returns: a spec dict, or a tuple (spec, *values of outputs); a spec of None changes
    nothing; a SpecError or gr.Error is shown. With select=True, fn gets the gr.SelectData first. The design it
    replaces stays one undo away. Returns the event.
    """

    demo: gr.Blocks
    spec: gr.State
    report: gr.State
    history: gr.State
    pins: gr.State = None
    load_spec: Callable = None
    extras: dict = field(default_factory=dict)
    # events answered outside the queue that change the design, and wire(trigger) per follower of the design
    _design_events: list = field(default_factory=list, init=False, repr=False)
    _design_followers: list = field(default_factory=list, init=False, repr=False)

    def changes_design(self, event) -> None:
        """Register an event answered outside the queue that changes the composer's design (an edit, an undo, a
        design loaded): Gradio fires no gr.State.change for it, so every follower chains onto it, those wired
        before it and after it alike (tabs are built in turn: the Search tab loads designs the Share tab follows)."""
        self._design_events.append(event)
        for wire in self._design_followers:
            wire(_latest(event.then))

    def follow_design(self, wire) -> None:
        """wire(trigger) after every change of the composer's design: `trigger` is `spec.change` (a design set
        by a queued event: none does now, as every load answers outside the queue) and the `.then` of each event
        registered by changes_design."""
        self._design_followers.append(wire)
        for trigger in (self.spec.change, *[_latest(e.then) for e in self._design_events]):
            wire(trigger)

    def on_design_change(self, fn, inputs, outputs, **kwargs) -> None:
        """Run `fn` whenever the composer's design changes (follow_design)."""
        self.follow_design(lambda trigger: trigger(fn, inputs, outputs, **kwargs))


def _latest(then):
    """`event.then` that runs again for the latest design: Gradio's default for a chained step, 'once', skips a run
    while the previous one is pending, so two designs loaded in quick succession left the share link and the Train
    tab's download on the first one (`spec.change` is 'always_last' already)."""
    return functools.partial(then, trigger_mode='always_last')


def show_initially(components, values) -> None:
    """Give components the values an event handler would send them (plain values or gr.update dicts; a
    gr.skip() leaves the component as it is), before the app is launched: the first page then shows them with
    no event round trip. A gr.State's value is copied into every new session."""
    for component, value in zip(components, values, strict=True):
        if isinstance(value, dict) and value.get('__type__') == 'update':
            props = {k: v for k, v in value.items() if k != '__type__'}
        else:
            props = {'value': value}
        for key, v in props.items():
            if key != 'value':
                setattr(component, key, v)
            elif isinstance(component, gr.State):
                component.value = v
            else:
                shown = component.postprocess(v)
                component.value = shown.model_dump() if hasattr(shown, 'model_dump') else shown


def max_upload_mb() -> int:
    """Largest upload (image, checkpoint, spec) the server accepts, MiB: EXPLORER_MAX_UPLOAD_MB, default 512
    (a ConvFormer-B36 checkpoint is about 400 MB). Gradio refuses bigger files before they reach a handler."""
    raw = os.environ.get('EXPLORER_MAX_UPLOAD_MB', '512')
    if not raw.isdigit() or int(raw) <= 0:
        raise SpecError([('', f'EXPLORER_MAX_UPLOAD_MB={raw!r} must be a positive integer')])
    return int(raw)


def max_request_mb() -> int:
    """Largest request body other than an upload, MiB: EXPLORER_MAX_REQUEST_MB, default 16 (an API call carries at
    most a spec, whose JSON is limited to 1 MB, or an image as base64)."""
    raw = os.environ.get('EXPLORER_MAX_REQUEST_MB', '16')
    if not raw.isdigit() or int(raw) <= 0:
        raise SpecError([('', f'EXPLORER_MAX_REQUEST_MB={raw!r} must be a positive integer')])
    return int(raw)


UPLOAD_ROUTE = '/gradio_api/upload'  # Gradio's file-upload route, which applies its own max_file_size


def is_upload(scope) -> bool:
    """A multipart POST to Gradio's upload route (below the app's root path), and nothing else: an API call
    named `upload` (/gradio_api/call/upload) ends in /upload too, and its JSON body is read whole."""
    path, root = scope.get('path', ''), scope.get('root_path', '')
    if root and path.startswith(root):
        path = path[len(root) :]
    content_type = dict(scope.get('headers') or []).get(b'content-type', b'')
    return scope.get('method') == 'POST' and path == UPLOAD_ROUTE and content_type.startswith(b'multipart/form-data')


class BodyLimit:
    """ASGI middleware: refuse a request body over `max_bytes` with 413 before the app reads it (by its
    Content-Length, and by counting a body sent without one). Uploads (`is_upload`) are left to Gradio's
    max_file_size."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope['type'] != 'http' or is_upload(scope):
            return await self.app(scope, receive, send)
        length = dict(scope.get('headers') or []).get(b'content-length')
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._refuse(send)
        seen, over, started = 0, False, False

        async def counted():
            nonlocal seen, over
            message = await receive()
            if message['type'] == 'http.request':
                seen += len(message.get('body', b''))
                if seen > self.max_bytes:  # no Content-Length, or a false one: stop reading here
                    over = True
                    return {'type': 'http.disconnect'}
            return message

        async def answer(message):
            nonlocal started
            first = message['type'] == 'http.response.start' and not started
            started = started or message['type'] == 'http.response.start'
            if not over:
                await send(message)
            elif first:  # the app's answer to a body cut short ('error parsing the body', 400): ours instead
                await self._refuse(send)

        await self.app(scope, counted, answer)
        if over and not started:  # the app gave up on the cut body without answering
            await self._refuse(send)

    async def _refuse(self, send):
        body = (
            f'{{"error": "request body over the {self.max_bytes // 2**20} MiB limit '
            f'(EXPLORER_MAX_REQUEST_MB; uploads have their own limit)"}}'
        ).encode()
        await send(
            {
                'type': 'http.response.start',
                'status': 413,
                'headers': [(b'content-type', b'application/json'), (b'content-length', str(len(body)).encode())],
            }
        )
        await send({'type': 'http.response.body', 'body': body})


async def unreadable_body(request, exc):
    """FastAPI's answer to a JSON body it could not parse was a bare 400 'There was an error parsing the body'
    (a 5,000-digit number, lists nested 50,000 deep): the same 400, saying what could not be read. Every other
    HTTP error keeps FastAPI's own answer."""
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.responses import JSONResponse

    json_body = 'json' in request.headers.get('content-type', '')  # a form body's parse error is FastAPI's to word
    if exc.status_code != 400 or exc.detail != 'There was an error parsing the body' or not json_body:
        return await http_exception_handler(request, exc)
    cause = exc.__cause__
    if isinstance(cause, RecursionError):
        why = 'lists or objects are nested too deeply'
    elif isinstance(cause, ValueError) and 'digits' in str(cause):
        why = f'a number has more than {sys.get_int_max_str_digits():,} digits'
    else:
        why = f'{type(cause).__name__ if cause else "unknown"}'
    return JSONResponse({'error': f'the request body is not JSON the server can read: {why}'}, status_code=400)


async def invalid_request(request, exc):
    """FastAPI's 422 for a request that fails validation, which itself failed (500, with three tracebacks in the
    log) when the request's body was bytes that are not UTF-8 (it echoes the input back as text): then the same
    422 without the echoed input. A body that is not JSON at all is a 400 saying why, as `unreadable_body`'s."""
    from fastapi.exception_handlers import request_validation_exception_handler
    from fastapi.responses import JSONResponse

    bad = next((e for e in exc.errors() if e.get('type') == 'json_invalid'), None)
    if bad is not None:  # a syntax error got FastAPI's 422 list, where the README promises a 400 saying why
        where = [p for p in bad.get('loc', ()) if isinstance(p, int)]
        why = public_text(str((bad.get('ctx') or {}).get('error') or bad.get('msg')), 200)
        at = f' at character {where[0]}' if where else ''
        return JSONResponse({'error': f'the request body is not JSON the server can read: {why}{at}'}, status_code=400)
    try:
        return await request_validation_exception_handler(request, exc)
    except Exception:  # noqa: BLE001 - the input could not be put into JSON: leave it out
        errors = [
            {
                'type': str(e.get('type')),
                'loc': [str(p) for p in e.get('loc', ())],
                'msg': public_text(e.get('msg'), 300),
            }
            for e in exc.errors()[:20]
        ]
        return JSONResponse({'detail': errors}, status_code=422)


async def unknown_endpoint(request, exc):
    """Gradio's answer to a call of a name no event has (/gradio_api/call/nope) was a bare 500 with a 68-line
    traceback in the log: a 404 naming it, and a quiet log."""
    from fastapi.responses import JSONResponse

    name = public_text(request.path_params.get('api_name', ''), 100)
    return JSONResponse({'error': f'no endpoint {name!r}; see /gradio_api/info'}, status_code=404)


def launch_kwargs() -> dict:
    """theme, css, the upload limit and the request-body limit for Blocks.launch (Gradio 6 takes them there)."""
    from fastapi.exceptions import RequestValidationError
    from gradio.route_utils import FnIndexInferError
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.middleware import Middleware

    return {
        'theme': THEME,
        'css': CSS,
        'max_file_size': f'{max_upload_mb()}mb',
        'app_kwargs': {
            'middleware': [Middleware(BodyLimit, max_bytes=max_request_mb() * 2**20)],
            'exception_handlers': {
                StarletteHTTPException: unreadable_body,
                RequestValidationError: invalid_request,
                FnIndexInferError: unknown_endpoint,
            },
        },
    }


# ---- showing text that came with a request ---------------------------------------------------------------
# Messages repeat what a visitor sent (a spec's name, a field's value) and what the server knows (a file's
# location). Before any of it is shown: server paths become file names, long text is clipped, and HTML and
# Markdown are escaped, so a shared link cannot put a link, an image or markup on someone else's screen.
MAX_MESSAGE_CHARS = 1_000
# an http(s) URL ('https://example.com/tmp') is the user's text, kept whole up to an '=', a quote, a comma or a
# semicolon (group 'url'); a path after 'file=' (Gradio's file routes) or in another scheme's URL (file://,
# smb://) is a server path like any other
_SERVER_PATH = re.compile(r'(?P<url>\bhttps?://[^\s/\'"]+[^\s=\'",;<>]*)|(?<![\w.])/(?:[\w.@+-]+/)+([\w.@+-]*)')
_MARKDOWN = re.compile(r'([\\`*_{}\[\]()#+!|~>:.-])')  # CommonMark's escapable punctuation, : and . against autolinks


_WINDOWS_PATH = re.compile(r'(?<![\w.])[A-Za-z]:\\(?:[^\\\n\'"]+\\)+([^\\\s\'"]*)')


@functools.lru_cache(maxsize=1)
def _server_roots() -> re.Pattern | None:
    """The server's own folders (home, the Python prefix, the working and temporary folders): taken out of a path
    before the generic pattern reads it, so a folder name with a space ('/Users/Jane Doe/.cache/...') does not
    stop it there and leave the rest of the path on screen."""
    roots = {str(Path.home()), sys.prefix, os.getcwd(), tempfile.gettempdir()}
    roots = sorted((r.rstrip('/') for r in roots if r and r.startswith('/') and len(r) > 1), key=len, reverse=True)
    alternatives = '|'.join(re.escape(r) for r in roots)
    # whole paths only: not inside a word, a relative path or a URL ('results/tmp', 'https://example.com/tmp')
    return re.compile(r'(?<![\w.@+/:-])(?:' + alternatives + r')(?![\w.@+-])') if roots else None


def public_text(text: object, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` without server paths (each becomes its file name) and at most `limit` characters."""
    text = str(text)
    roots = _server_roots()
    if roots is not None:  # '<root>/a/b.txt' -> '/_/a/b.txt' (the pattern below makes it 'b.txt'); '<root>' alone
        text = roots.sub(lambda m: '/_' if text[m.end() : m.end() + 1] == '/' else '(a server folder)', text)
    text = _WINDOWS_PATH.sub(lambda m: m.group(1) or '(a server folder)', text)
    text = _SERVER_PATH.sub(lambda m: m['url'] or m.group(2) or '(a server folder)', text)
    return text if len(text) <= limit else text[:limit] + f' … ({len(text) - limit:,} more characters)'


def html_text(text: object, limit: int = MAX_MESSAGE_CHARS) -> str:
    """public_text, escaped for HTML (and for gr.Error / gr.Warning, which render HTML)."""
    return html.escape(public_text(text, limit), quote=False)


def md_text(text: object, limit: int = MAX_MESSAGE_CHARS) -> str:
    """public_text, escaped for Markdown: no markup, link or HTML from the text survives."""
    return _MARKDOWN.sub(r'\\\1', html.escape(public_text(text, limit), quote=False))


def user_error(e: object, title: str = 'Error') -> gr.Error:
    """gr.Error for a message that may carry request text."""
    return gr.Error(html_text(e), title=title, print_exception=False)


def person_path(path: str) -> str:
    """A field path as the form names it: 'stages[2].dim' -> 'S3 dim' (stages are S1..S6 wherever people read;
    the API keeps the machine path)."""
    return re.sub(r'stages\[(\d+)\]\.?', lambda m: f'S{int(m.group(1)) + 1} ', path).strip()


# the spec's field names that the form labels otherwise (a mixer argument's label is its name without underscores)
FORM_LABELS = {
    'mlp_ratio': 'MLP ratio',
    'img_size': 'image size',
    'in_chans': 'channels',
    'num_classes': 'classes',
    'mlp_act': 'MLP act',
    'mixer': 'token mixer',
}


def field_label(path: str) -> str:
    """A field path as the form labels the field: 'stages[2].mlp_ratio' -> 'S3 MLP ratio', 'stages[0].mixer_args.
    head_dim' -> 'S1 head dim', 'img_size' -> 'image size' (a field the form does not show keeps its path)."""
    m = re.fullmatch(r'(stages\[\d+\]\.)?(?:mixer_args\.([a-z_]+)|([a-z_]+))', path)
    if not m:
        return person_path(path)
    stage = person_path(m.group(1) or '')
    name = m.group(2).replace('_', ' ') if m.group(2) else FORM_LABELS.get(m.group(3), m.group(3))
    return f'{stage} {name}'.strip()


def spec_line(e: SpecError) -> str:
    """A SpecError on one line for a toast, each field named as the form names it: the toast shows HTML, where
    the error's one-field-per-line text ran together ('... cycle stages[0].depth: 0 is out of range')."""
    return '; '.join(f'{field_label(p)}: {m}' if p else m for p, m in e.errors)


def error_text(e: SpecError) -> str:
    """A SpecError as Markdown: one bullet per field, named as the form names it."""
    lines = [
        f'- <code>{html_text(field_label(p), 200)}</code>: {md_text(person_path(m))}' if p else f'- {md_text(m)}'
        for p, m in e.errors[:20]
    ]
    more = len(getattr(e, 'named', e.errors)) - 20 + getattr(e, 'omitted', 0)
    if more > 0:
        lines.append(f'- … and {more:,} more')
    return '**Not a valid network** (the numbers show the last valid one):\n' + '\n'.join(lines)


def api_error(e: Exception) -> gr.Error:
    return user_error(e, title='Invalid spec' if isinstance(e, SpecError) else 'Invalid request')


def endpoint(fn):
    """Expose a handler (a function or a generator function, which streams) as an API endpoint: its own gr.Error
    passes as it is, SpecError and bad values become a clean error for the client, and anything else is still
    answered with a message naming the endpoint (never Gradio's generic error), and logged."""

    def failed(e: Exception) -> gr.Error:
        if isinstance(e, gr.Error):
            return e
        if isinstance(e, (SpecError, ValueError)):
            return api_error(e)
        logging.getLogger('explorer').exception('endpoint %s failed', fn.__name__)
        return user_error(
            f'{fn.__name__.removeprefix("api_")}: could not handle this request ({type(e).__name__}: {e})'
        )

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def streams(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - a bug must not look like a crash to the client
                raise failed(e) from None

        return streams

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - as above
            raise failed(e) from None

    return wrapper


# what a request's values can make Gradio raise while reading them (pydantic's ValidationError and Gradio's
# InvalidPathError are ValueErrors); anything else (OSError copying an upload, MemoryError) is the server's fault
CLIENT_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError)


def refuse_unreadable_values(demo: gr.Blocks) -> None:
    """Answer a request whose values Gradio cannot read with a message that names them.

    Gradio reads an event's values before any handler runs: it checks their number, moves files into its cache
    (refusing a path that was not uploaded) and lets each component preprocess its value. What fails there was
    answered `{"error": null}` (a blank "Error" in the page) with a traceback in the server log for every such
    request: an example index past the list, a checkpoint sent as a server path, a value of the wrong type. Now the
    client is told which event and fields could not be read, and why, and the log stays quiet. Gradio's own
    refusals (a value outside a dropdown's choices) are passed on escaped and shortened, without a traceback; a
    fault of the server's while reading is logged and said to be one.

    The page's own events can be called by name too (/gradio_api/call/<name>), with values the page never sends:
    a select event without its selection (gr.SelectData), an examples click without an example. Those are refused
    the same way before the handler runs (`_missing_event_value`)."""
    read, call = demo.preprocess_data, demo.call_function

    async def preprocess_data(block_fn, inputs, state, explicit_call=False):
        try:
            return await read(block_fn, inputs, state, explicit_call)
        except gr.Error as e:
            if not e.print_exception:  # the app's own refusal (user_error and the like): already escaped
                raise
            said = _out_of_bounds(block_fn, inputs) or public_text(e.message, 300)
            raise user_error(f'{_event(block_fn)}: {said}', title='Bad request') from None
        except Exception as e:  # noqa: BLE001 - whatever Gradio raised, the client gets a named answer
            cause = e.__cause__ if e.__cause__ is not None else e
            if isinstance(cause, CLIENT_ERRORS):
                raise user_error(unreadable_message(block_fn, cause), title='Bad request') from None
            logging.getLogger('explorer').exception('reading the values of %s failed', _event(block_fn))
            raise user_error(
                f'{_event(block_fn)}: the server failed while reading the values sent ({type(cause).__name__}); '
                'the details are in its log'
            ) from None

    async def call_function(
        block_fn, processed_input, iterator=None, requests=None, event_id=None, event_data=None, *args, **kwargs
    ):
        if iterator is None:  # a call, not the next value of a generator already running
            said = _missing_event_value(block_fn, processed_input, event_data)
            if said is not None:
                raise user_error(f'{_event(block_fn)}: {said}', title='Bad request')
        return await call(block_fn, processed_input, iterator, requests, event_id, event_data, *args, **kwargs)

    demo.preprocess_data = preprocess_data
    demo.call_function = call_function


def _missing_event_value(block_fn, values, event_data) -> str | None:
    """What a request left out that the page always sends, or None: the data of the event (what a select event
    selected) for a handler that takes it, an example's index for an examples click, the file of an upload."""
    from gradio.utils import get_type_hints  # as Gradio reads them to pass the event's data

    for hint in get_type_hints(getattr(block_fn, 'fn', None)).values():
        if isinstance(hint, type) and issubclass(hint, gr.EventData) and hint is not gr.EventData:
            try:
                hint(None, getattr(event_data, '_data', None))  # as Gradio makes it: reads the keys it needs
            except (TypeError, KeyError, AttributeError):
                return f'no event data sent (a {hint.__name__}: what the page selected)'
    uploads = {target for target, event in getattr(block_fn, 'targets', ()) if event == 'upload'}
    for component, value in zip(getattr(block_fn, 'inputs', ()), values or ()):
        if isinstance(component, gr.Dataset) and value is None:
            return 'no example sent (its index in the list)'
        if component._id in uploads and value is None:
            return 'no file sent (upload it first)'
    return None


def _out_of_bounds(block_fn, inputs) -> str | None:
    """The number field whose value is outside its minimum or maximum, named by its label: Gradio refuses it
    while reading the values with 'Value 0 is less than minimum value 1.', which names no field."""
    for component, value in zip(getattr(block_fn, 'inputs', ()), inputs or ()):
        if not isinstance(component, gr.Number) or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        low, high = component.minimum, component.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            name = component.label or component.elem_id or 'a number field'
            allowed = (
                f'{low:g} to {high:g}'
                if low is not None and high is not None
                else (f'at least {low:g}' if low is not None else f'at most {high:g}')
            )
            return f'{name}: {value:g} is out of range; allowed {allowed}'
    return None


def _event(block_fn) -> str:
    return block_fn.api_name or block_fn.name or 'this event'


def unreadable_message(block_fn, cause: Exception) -> str:
    """What refuse_unreadable_values tells the client: the event, its fields (their labels) and the reason."""
    fields = [
        str(getattr(b, 'label', None) or b.get_block_name()).split(' (')[0][:60]
        for b in block_fn.inputs
        if not getattr(b, 'stateful', False)
    ]
    if type(cause).__name__ == 'InvalidPathError':  # gradio.exceptions: a file path the server did not receive
        reason = "a file must first go through Gradio's upload route, which answers the path to send; files already "
        reason += 'on the server are not read'
    elif callable(getattr(cause, 'errors', None)):  # pydantic: the first error's field and message, not its input
        errors = cause.errors()
        first = errors[0] if errors else {}
        where = '.'.join(str(p) for p in first.get('loc', ())) or 'the value'
        more = f' (and {len(errors) - 1} more)' if len(errors) > 1 else ''
        reason = f'{type(cause).__name__}: {where}: {first.get("msg", "not valid")}{more}'
    else:
        reason = f'{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else "no detail"}'
    return f'{_event(block_fn)}: the values sent could not be read ({", ".join(fields) or "no fields"}): {reason}'


class WorkSlots:
    """A server-wide limit on heavy work (speed runs, verifications, model calls), held by the work itself.

    Gradio's concurrency_limit counts events: when a job is cancelled it frees the event's slot at once, but it
    cannot stop the thread doing the work, which runs on. Submit-and-cancel so ran any number of speed runs or
    occlusion maps at once (timings overlapped; two cancelled caformer_b36 occlusions kept both cores busy for
    3 minutes). A handler wrapped with `held` takes one of `n` slots before its work and gives it back when that
    work ends, cancelled or not: the next request waits up to `wait_s` for it, then is told the server is busy."""

    def __init__(self, what: str, n: int, wait_s: float):
        self.what, self.n, self.wait_s = what, n, wait_s
        self._sem = threading.BoundedSemaphore(n)

    def _take(self) -> None:
        if not self._sem.acquire(timeout=self.wait_s):
            at_once = 'one at a time' if self.n == 1 else f'{self.n} at a time'
            raise user_error(
                f'the server is busy with other {self.what} ({at_once}, each to its end even when its page has gone): '
                f'try again in a minute',
                title='Busy',
            )

    def held(self, fn):
        """fn (a function or a generator function) that holds a slot while it runs."""
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def streams(*args, **kwargs):
                self._take()
                try:
                    yield from fn(*args, **kwargs)
                finally:
                    self._sem.release()

            return streams

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            self._take()
            try:
                return fn(*args, **kwargs)
            finally:
                self._sem.release()

        return wrapper


# Gradio's own queue (concurrency_limit) lines requests up: a slot is only ever taken while a cancelled job's work
# finishes, so waiting briefly is enough, and a short wait keeps submit-and-cancel from piling up waiting threads
SPEED_SLOTS = WorkSlots('speed runs', 1, 10.0)
VERIFY_SLOTS = WorkSlots('fvcore verifications', 1, 10.0)
MODEL_SLOTS = WorkSlots('model calls (predictions, attributions, mixing maps)', 2, 10.0)

MAX_SPEC_FILE_BYTES = 1_000_000  # a spec is a few kB; an upload above this is refused before it is read


def read_uploaded_spec(file) -> dict:
    """An uploaded spec file (a path gradio gives for this session's upload) -> validated spec dict."""
    from explorer.core.share import load_json_text

    if not isinstance(file, (str, os.PathLike)) or not str(file):  # a raw request's null: the page sends a file
        raise user_error('uploaded spec: upload a spec file (JSON)', title='Bad request')
    path = Path(file)
    try:
        if not path.is_file():  # gone (swept from the cache) or a folder: a raw request can name either
            raise OSError
        size = path.stat().st_size
        if size > MAX_SPEC_FILE_BYTES:
            raise user_error(f'uploaded spec: {size:,} bytes is over the {MAX_SPEC_FILE_BYTES:,}-byte limit for a spec')
        return load_json_text(path.read_text(encoding='utf-8'))
    except SpecError as e:
        raise user_error(f'uploaded spec: {spec_line(e)}') from None
    except UnicodeDecodeError as e:
        raise user_error(f'uploaded spec: {e}') from None
    except OSError:
        raise user_error('uploaded spec: the file cannot be read (no longer there?); upload it again') from None


# ---- files handed to the browser ----------------------------------------------------------------------------
DOWNLOAD_DIR = Path(tempfile.mkdtemp(prefix='mfx-downloads-'))  # this process's, removed when it exits
atexit.register(shutil.rmtree, DOWNLOAD_DIR, ignore_errors=True)
MAX_DOWNLOAD_FILES = 256  # the newest files kept for download; older ones are removed as new ones come


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # renamed or removed by another request meanwhile: not among the old files
        return float('inf')


def download_file(stem: str, suffix: str, write) -> str:
    """A file the browser may download: `write(path)` fills it once. Gradio serves files from the temporary
    folder (not from the runs folder), so downloads are made here. The name is `stem` reduced to letters,
    digits, '-', '_' and '.' (at most 80) plus `suffix`: a file name, never a path. A stem that had to change
    gets a hash of itself, so two stems never share a file (the file is reused: the stem must name its content)."""
    # ASCII only: 60 letters of 4 bytes each (a valid spec name) made a name past the file system's 255 bytes
    safe = ''.join(c if c.isascii() and (c.isalnum() or c in '-_.') else '_' for c in stem[:80]).strip('.') or 'file'
    if safe != stem:
        safe = f'{safe[:70]}-{hashlib.sha256(stem.encode()).hexdigest()[:8]}'
    path = DOWNLOAD_DIR / f'{safe}{suffix}'
    if path.parent != DOWNLOAD_DIR:  # cannot happen with the characters above; checked all the same
        raise ValueError('not usable as a file name')
    if not path.exists():
        atomic_write(path, write)  # a request for the same file meanwhile is never handed half of it
        files = sorted(DOWNLOAD_DIR.iterdir(), key=_mtime)
        for old in files[:-MAX_DOWNLOAD_FILES]:
            old.unlink(missing_ok=True)
    else:
        with contextlib.suppress(OSError):  # in use again: the newest, not the first one evicted
            os.utime(path)
    return str(path)


def spec_download(spec: dict) -> str:
    """The spec as a JSON file to download, named after the spec and its content (so a name never serves
    another spec's stale file)."""
    from explorer.core import share

    text = share.spec_json(spec)
    stem = f'{str(spec["name"])[:60]}-{hashlib.sha1(text.encode()).hexdigest()[:8]}'
    return download_file(stem, '.json', lambda path: path.write_text(text, encoding='utf-8'))


_MODEL_CODE = threading.Lock()
_MODEL_CODE_READY = threading.Event()


def load_model_code() -> None:
    """Import the model code (torch, timm, fvcore, captum) once, in whichever thread asks first, while the others
    wait: two threads importing timm at the same moment can each meet the other's half-initialised modules
    ("cannot import name ... from partially initialized module"), as the page-load preload and the first
    verification of the default preset did on a fresh server."""
    if _MODEL_CODE_READY.is_set():
        return
    with _MODEL_CODE:
        if not _MODEL_CODE_READY.is_set():
            import captum.attr  # noqa: F401
            import fvcore.nn  # noqa: F401
            import timm  # noqa: F401

            import explorer.core.build  # noqa: F401

            _MODEL_CODE_READY.set()
