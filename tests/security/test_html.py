"""Nothing a request carries is rendered as HTML or Markdown: it is shown as written."""

from __future__ import annotations

import pytest

from explorer.app import predict as up
from explorer.app.context import error_text, html_text, md_text, public_text
from explorer.app.train import readiness
from explorer.core.spec import ArchSpec, SpecError
from explorer.viz.predict import topk_figure
from explorer.viz.training import training_figure
from tests.conftest import TINY

EVIL = '<img src=x onerror=alert(1)> [click](http://evil.example) **bold** `code`'


def test_markdown_text_keeps_no_markup():
    out = md_text(EVIL)
    assert '<img' not in out and '](' not in out and '**' not in out
    assert out == (
        '&lt;img src=x onerror=alert\\(1\\)&gt; \\[click\\]\\(http\\://evil\\.example\\) \\*\\*bold\\*\\* \\`code\\`'
    )


def test_html_text_and_server_paths():
    assert html_text('<b>x</b>') == '&lt;b&gt;x&lt;/b&gt;'
    assert public_text('cannot read /home/alice/secret/model.pth: bad') == 'cannot read model.pth: bad'
    assert public_text('x' * 5000).endswith('(4,000 more characters)')


def test_server_paths_with_spaces_and_windows_paths_become_file_names(monkeypatch):
    """A home folder with a space stopped the path pattern: '/Users/Jane Doe/.cache/...' showed as 'Jane
    Doe/.cache/metaformer-explorer/trained/run-1.safetensors'; a Windows path was left whole."""
    from pathlib import Path

    import explorer.app.context as context

    monkeypatch.setattr(Path, 'home', classmethod(lambda cls: Path('/Users/Jane Doe')))
    context._server_roots.cache_clear()
    try:
        text = "cannot read '/Users/Jane Doe/.cache/metaformer-explorer/trained/run-1.safetensors': bad"
        assert public_text(text) == "cannot read 'run-1.safetensors': bad"
        assert public_text('cannot write to /Users/Jane Doe: full') == 'cannot write to (a server folder): full'
    finally:
        monkeypatch.undo()
        context._server_roots.cache_clear()
    assert public_text(r'cannot read C:\Users\Jane Doe\AppData\run-1.safetensors: bad') == (
        'cannot read run-1.safetensors: bad'
    )
    assert public_text('stages[0].dim: 3/4 is not allowed') == 'stages[0].dim: 3/4 is not allowed'
    # a path clipped in a message runs on into the text: it must not swallow the text up to the next slash
    clipped = "image: '/x/assets/images/chelsea_c… is neither an example name (see /examples) nor bytes"
    assert 'is neither an example name' in public_text(clipped)


def test_spec_errors_are_escaped():
    with pytest.raises(SpecError) as info:
        ArchSpec.from_dict({'name': EVIL, 'stages': [{'mixer': EVIL, 'depth': 1, 'dim': 8}]})
    text = error_text(info.value)
    assert '<img' not in text and '](' not in text


def test_names_in_status_lines_and_figures_are_escaped():
    spec = {**TINY, 'name': '<a href="http://evil.example">x</a>'}
    assert '<a' not in readiness(spec)
    fig = training_figure([], [], spec['name'])
    assert fig.layout.title.text == '&lt;a href="http://evil.example"&gt;x&lt;/a&gt;'
    top = topk_figure([{'label': '<b>cat</b>', 'index': 1, 'prob': 0.5}], '<i>t</i>')
    assert '<b>' not in top.data[0].y[0] and top.layout.title.text == '&lt;i&gt;t&lt;/i&gt;'


def test_unknown_model_message_is_escaped_and_clipped():
    fig, status = up.predict_handler('<script>' + 'x' * 10_000, None, 'random', None, None)
    assert fig is None and '<script>' not in status and len(status) < 3_000


def test_server_folders_are_taken_out_only_as_whole_paths():
    """The folders were matched anywhere: 'results/tmp' became 'results(a server folder)', and '/tmp/x' kept a
    stray slash ('/x')."""
    import tempfile

    tmp = tempfile.gettempdir()
    for text in (f'results{tmp}: not writable', f"spec name 'runs{tmp}' has a '/'", f'ratio 3{tmp}'):
        assert public_text(text) == text
    assert public_text(f'{tmp}/model.safetensors is damaged') == 'model.safetensors is damaged'


def test_urls_are_not_read_as_server_paths():
    """The generic path pattern started at the second slash of 'https://': 'https://example.com/tmp' showed as
    'https:/tmp'. A URL is the user's own text, not a path on this server."""
    for text in (
        'see https://example.com/tmp for the weights',
        'download failed: https://huggingface.co/timm/caformer_s18.sail_in1k/resolve/main/model.safetensors',
    ):
        assert public_text(text) == text
    assert public_text('file:///srv/models/weights.pth') == 'file://weights.pth'  # a server path all the same
    assert public_text('http://h:7860/gradio_api/file=/srv/app/x.png') == 'http://h:7860/gradio_api/file=x.png'
    for text in ('file://localhost/srv/models/x.pth', 'smb://host/share/models/x.pth', "'https://x/a','/srv/m/x.pth'"):
        assert '/srv' not in public_text(text) and 'share/models' not in public_text(text), public_text(text)
    assert public_text('cannot read /srv/models/x.pth or https://example.com/a/b') == (
        'cannot read x.pth or https://example.com/a/b'
    )
