"""No path from a request reaches the file system: models are names in a registry, files the server writes
have names it makes, and answers never show where the server keeps things."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from explorer.app import predict as up
from explorer.app.context import DOWNLOAD_DIR, spec_download
from explorer.core.catalog import PRESET_DIR, get_preset
from explorer.train.runner import run_file_name, training_events
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[2]


def probes(tmp_path: Path) -> list[str]:
    """Names a visitor might send as a model: absolute and relative paths to real files, a symlink, a folder."""
    link = tmp_path / 'link.json'
    link.symlink_to(PRESET_DIR / 'caformer_s18.json')
    return [
        str(PRESET_DIR / 'caformer_s18.json'),
        '../presets/caformer_s18.json',
        '../../../../etc/passwd',
        '/etc/passwd',
        str(link),
        str(tmp_path),
        str(ROOT / 'assets' / 'fmnist' / 'fmnist_hybrid.safetensors'),
        'presets/caformer_s18',
    ]


def test_api_opens_no_path_given_as_a_model(tmp_path):
    for probe in probes(tmp_path):
        for call in (
            lambda m: up.api_predict(m, 'chelsea_cat.jpg', 'random'),
            lambda m: up.api_mixing_map(m, '', 'random'),
        ):
            with pytest.raises(Exception) as info:
                call(probe)
            message = str(info.value)
            assert 'unknown model' in message and 'known models' in message, (probe, message)
            assert 'root:' not in message and '"stages"' not in message  # nothing of the file comes back


def test_ui_handlers_open_no_path_given_as_a_model(tmp_path):
    for probe in probes(tmp_path):
        fig, status = up.predict_handler(probe, None, 'random', None, str(ROOT / 'assets/images/chelsea_cat.jpg'))
        assert fig is None and 'unknown model' in status, (probe, status)


def test_answers_name_no_server_path():
    out = up.api_predict('fmnist_hybrid', '00000_ankle_boot.png', 'pretrained', 3)
    text = json.dumps(out)
    for secret in (str(ROOT), str(Path.home()), '/tmp/', 'site-packages'):
        assert secret not in text, secret
    assert out['weights']['where'] == "trained model 'fmnist_hybrid'"
    image = str(ROOT / 'assets' / 'fmnist' / 'images' / '00000_ankle_boot.png')
    fig, status = up.predict_handler('trained: fmnist_hybrid', None, 'pretrained', None, image)
    assert fig is not None and str(ROOT) not in status and "trained model 'fmnist\\_hybrid'" in status, status


def test_run_file_names_are_names_not_paths():
    for name in ('../../etc/cron.d/x', '/abs/path', '..', 'a' * 500, 'ok_name', 'na\x00me', '\u202eevil', ''):
        made = run_file_name(name, 0)
        assert '/' not in made and '\x00' not in made and not made.startswith('.') and made.endswith('.safetensors')
        assert len(made) < 100
    assert run_file_name('caformer_s18', 3).startswith('caformer_s18-')


def test_a_training_named_like_a_path_writes_inside_the_runs_folder(tmp_path, fake_dir):
    runs = tmp_path / 'runs'
    before = set(tmp_path.parent.iterdir())
    spec = {**TINY, 'name': '../../escaped'}
    events = list(training_events(spec, 0.1, None, 32, 0, 64, 'path-test', out_dir=runs, data_dir=fake_dir))
    assert events[-1]['kind'] == 'done', events[-1]
    written = Path(events[-1]['result'].checkpoint)
    assert written.parent == runs and written.is_file()
    assert set(tmp_path.parent.iterdir()) == before  # nothing appeared beside the test's folder


def test_spec_downloads_stay_in_their_folder_and_are_bounded(monkeypatch):
    import explorer.app.context as context

    monkeypatch.setattr(context, 'MAX_DOWNLOAD_FILES', 3)
    base = get_preset('poolformer_s12')
    for i, name in enumerate(['../../x', '/etc/passwd', '..', 'a/b', 'c', 'd']):
        path = Path(spec_download({**base, 'name': name, 'img_size': 224 + 32 * i}))
        assert path.parent == DOWNLOAD_DIR and path.is_file()
    assert len(list(DOWNLOAD_DIR.iterdir())) <= 3


def test_a_valid_name_of_four_byte_letters_still_downloads_and_a_reused_file_is_kept_longest(monkeypatch):
    """60 letters of 4 bytes (U+1D400, U+20000: valid spec names) made a file name past the file system's 255
    bytes (ENAMETOOLONG: the Share tab and Train at scale failed for that design, and a ?spec= link did it to
    whoever opened it); and a file handed out again was the first evicted, being the oldest."""
    import explorer.app.context as context
    from explorer.app.train import scale_values

    base = get_preset('poolformer_s12')
    for letter in ('\U0001d400', '\U00020000'):
        path = Path(spec_download({**base, 'name': letter * 60}))
        assert path.parent == DOWNLOAD_DIR and path.is_file() and len(path.name.encode()) < 120
        commands, spec_file = scale_values({**base, 'name': letter * 60})  # the Train tab's "Train at scale"
        assert Path(spec_file).is_file() and 'torchrun' in commands
    monkeypatch.setattr(context, 'MAX_DOWNLOAD_FILES', 2)
    kept = Path(spec_download({**base, 'name': 'kept'}))
    other = Path(spec_download({**base, 'name': 'other'}))
    os.utime(kept, (1, 1))
    os.utime(other, (2, 2))
    assert Path(spec_download({**base, 'name': 'kept'})) == kept  # asked for again: now the newest
    spec_download({**base, 'name': 'third'})
    assert kept.is_file() and not other.exists()


def test_a_download_is_written_whole_before_it_can_be_handed_out():
    """Review: a download (the search frontier's CSV and zip, made on every page load) was written in place, so a
    request for the same file meanwhile got half of it, and a write that failed left a partial file that was
    served from then on (the name is the content's)."""
    import uuid

    from explorer.app.context import download_file

    stem, seen = f'whole-{uuid.uuid4().hex[:8]}', []

    def write(p):
        seen.append(p)
        p.write_text('half')
        raise OSError('disk full')

    with pytest.raises(OSError, match='disk full'):
        download_file(stem, '.csv', write)
    assert seen[0].parent == DOWNLOAD_DIR and seen[0].name != f'{stem}.csv'  # written under another name
    assert not (DOWNLOAD_DIR / f'{stem}.csv').exists() and not seen[0].exists()  # nothing half-written left
    path = download_file(stem, '.csv', lambda p: p.write_text('whole'))
    assert Path(path).read_text() == 'whole'


def test_gradio_sweeps_its_cache():
    from explorer.app.main import build_demo

    assert build_demo().delete_cache == (1800, 3600)


def test_an_image_given_as_an_existing_server_path_is_refused(tmp_path):
    """An API image is an example's name or bytes: a name that is a path (even one that exists) is refused."""
    with pytest.raises(Exception, match='neither an example name'):
        up.api_predict('fmnist_hybrid', str(ROOT / 'assets' / 'images' / 'chelsea_cat.jpg'), 'pretrained')
    assert os.path.exists(ROOT / 'assets' / 'images' / 'chelsea_cat.jpg')


def test_the_predict_image_reaches_the_app_undecoded_and_refuses_data_urls():
    """Gradio's gr.Image decoded an image sent as a data: URL (through /queue/join, as the page sends events) with
    every PIL decoder (EPS is handed to Ghostscript) and whole (13000x13000 from 219 kB: 1.7 GB) before the app's
    format and pixel checks; an upload PIL could not identify ended in a blank 'Error'."""
    import base64

    import gradio as gr
    from gradio.data_classes import ImageData

    from explorer.app.main import build_demo

    image = next(b for b in build_demo().blocks.values() if getattr(b, 'elem_id', None) == 'mfx-predict-image')
    assert image.preprocess is up.image_path_only
    eps = b'%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n'
    url = 'data:image/x;base64,' + base64.b64encode(eps).decode()
    with pytest.raises(gr.Error, match='a data: URL is not read'):
        image.preprocess(ImageData(url=url))
    odd = ImageData(path=str(ROOT / 'README.md'), orig_name='x.png')  # not an image: the app's loader says so
    assert image.preprocess(odd) == str(ROOT / 'README.md')
    with pytest.raises(Exception, match='not an image format PIL can read'):
        up.load_image(image.preprocess(odd))
