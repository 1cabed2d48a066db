import atexit
import gzip
import os
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
import torch

from tests.browser_kit import browser, page, shots  # noqa: F401  (fixtures for every browser test file)

# Tests run on the CPU with a fixed, small thread count so results do not depend on the machine's load.
torch.set_num_threads(min(2, os.cpu_count() or 1))
# the app's search studies and latency calibrations go to folders of this test session, not the user's (removed
# at the end: they used to stay behind, two per session)
for _var, _prefix in (('EXPLORER_SEARCH_DIR', 'mfx-test-search-'), ('EXPLORER_LATENCY_DIR', 'mfx-test-latency-')):
    if _var not in os.environ:
        os.environ[_var] = tempfile.mkdtemp(prefix=_prefix)
        atexit.register(shutil.rmtree, os.environ[_var], ignore_errors=True)


def tiny_spec(mixers=('pooling', 'sepconv', 'attention'), dims=(16, 32, 64), depths=(1, 1, 1), img_size=32, **kw):
    """A small valid spec dict (stride-4 stem, 2x downsampling): 32x32 input -> 8x8, 4x4, 2x2 tokens."""
    stages = [dict(mixer=m, depth=d, dim=c) for m, d, c in zip(mixers, depths, dims)]
    for st in stages:
        if st['mixer'] == 'attention':
            st['mixer_args'] = {'head_dim': 8}
    return dict(name='tiny', img_size=img_size, num_classes=10, stages=stages, **kw)


# pooling then attention at 32x32 (stem /4 -> 8x8, then 4x4): builds in milliseconds
TWO_STAGE = {
    'name': 'tiny',
    'img_size': 32,
    'num_classes': 10,
    'stages': [
        {'mixer': 'pooling', 'depth': 1, 'dim': 16},
        {'mixer': 'attention', 'depth': 1, 'dim': 32, 'mixer_args': {'head_dim': 16}},
    ],
}


@pytest.fixture
def tiny():
    return tiny_spec


def fill_dynamo_cache() -> None:
    """Compile as many MetaFormers (timm's `forward`, shared by every design) as dynamo keeps entries for one
    code object (`recompile_limit`), as a long-running server's earlier speed runs and trainings did: from then
    on a plain `torch.compile(model)` runs uncompiled. Dynamo's cheap 'eager' backend: no inductor."""
    from explorer.core.build import build_model
    from explorer.core.spec import ArchSpec

    for i in range(torch._dynamo.config.recompile_limit):
        spec = ArchSpec.from_dict(tiny_spec(mixers=('pooling',), dims=(8 + 8 * i,), depths=(1,)))
        torch.compile(build_model(spec, seed=0).eval(), backend='eager')(torch.randn(1, 3, 32, 32))


def run_cli(*argv) -> tuple[int, str, str]:
    """Run `explorer ARGV...` in-process: (exit status, stdout, stderr)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from explorer.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = main(list(argv))
        except SystemExit as e:
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='session')
def app_url():
    """The whole app launched once for the session on 127.0.0.1 (a free port)."""
    from explorer.app.context import launch_kwargs
    from explorer.app.main import build_demo

    demo = build_demo()
    port = free_port()
    demo.launch(server_name='127.0.0.1', server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs())
    yield f'http://127.0.0.1:{port}/'
    demo.close()


@pytest.fixture(scope='session')
def client(app_url):
    """A gradio_client Client of the session's app (tests that use it importorskip gradio_client)."""
    from gradio_client import Client

    # a generous timeout: on a loaded 2-core machine the server can take more than httpx's 5 s to answer a cancel
    return Client(app_url, verbose=False, httpx_kwargs={'timeout': 60})


# ---- Fashion-MNIST-shaped data written as idx files: training tests run anywhere ----------------------
# a Fashion-MNIST-shaped spec that trains in a second, and a quick recipe for it
TINY = {
    'name': 'tiny_fmnist',
    'img_size': 32,
    'in_chans': 1,
    'num_classes': 10,
    'stem': {'kernel_size': 4, 'stride': 4, 'padding': 0},
    'stages': [{'mixer': 'pooling', 'depth': 1, 'dim': 8}, {'mixer': 'sepconv', 'depth': 1, 'dim': 16}],
}
QUICK = dict(batch_size=32, crop_pad=0, eval_every_epoch=False, threads=1)


def write_idx(path: Path, array: torch.Tensor) -> None:
    """uint8 tensor -> gzipped idx file (magic 0x0000 08 ndim, big-endian sizes, raw bytes)."""
    header = struct.pack('>HBB', 0, 0x08, array.dim()) + struct.pack(f'>{array.dim()}I', *array.shape)
    with gzip.open(path, 'wb') as f:
        f.write(header + array.numpy().tobytes())


def synthetic_images(labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Class c is a bright horizontal bar at rows 2c+4..2c+5 on noise: learnable in a few steps."""
    x = torch.randint(0, 60, (len(labels), 28, 28), generator=gen, dtype=torch.uint8)
    for i, c in enumerate(labels.tolist()):
        x[i, 2 * c + 4 : 2 * c + 6, 4:24] = 255
    return x


@pytest.fixture(scope='session')
def fake_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp('fake_fmnist')
    gen = torch.Generator().manual_seed(0)
    for split, n in (('train', 320), ('t10k', 200)):
        labels = torch.arange(n, dtype=torch.uint8) % 10
        write_idx(d / f'{split}-images-idx3-ubyte.gz', synthetic_images(labels, gen))
        write_idx(d / f'{split}-labels-idx1-ubyte.gz', labels)
    return d
