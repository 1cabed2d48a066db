"""Every input that sizes work is checked before anything is allocated, and refused with a short message that
names it, in bounded time."""

from __future__ import annotations

import json
import time
import zipfile

import pytest
import torch

from explorer.core.spec import MAX_JSON_DEPTH, ArchSpec, SpecError
from explorer.explain.predict import data_config
from explorer.explain.weights import WeightsError, WeightsInfo, read_checkpoint
from explorer.measure import profile as prof
from explorer.measure.guard import ResourceError
from explorer.measure.speed import BenchError
from tests.conftest import tiny_spec


def refused_quickly(fn, exc, match: str, seconds: float = 2.0) -> str:
    t0 = time.perf_counter()
    with pytest.raises(exc, match=match) as info:
        fn()
    assert time.perf_counter() - t0 < seconds, f'took {time.perf_counter() - t0:.1f} s'
    message = str(info.value)
    assert len(message) < 2_000, f'a {len(message):,}-character message'
    return message


def test_two_hundred_thousand_stages():
    stages = [{'mixer': 'pooling', 'depth': 1, 'dim': 8}] * 200_000
    refused_quickly(lambda: ArchSpec.from_dict({'stages': stages}), SpecError, 'stages: 200,000 stages')


def test_a_twenty_megabyte_name_is_not_echoed():
    msg = refused_quickly(lambda: ArchSpec.from_dict({**tiny_spec(), 'name': 'x' * 20_000_000}), SpecError, 'name')
    assert 'characters)' in msg


@pytest.mark.parametrize('depth', [MAX_JSON_DEPTH + 1, 100_000])
def test_deep_json_is_a_spec_error(depth):
    text = '{"stages": [], "meta": ' + '[' * depth + ']' * depth + '}'
    refused_quickly(lambda: ArchSpec.from_json(text), SpecError, 'nested more than')
    deep = current = []
    for _ in range(min(depth, 5_000)):
        current.append([])
        current = current[0]
    refused_quickly(lambda: ArchSpec.from_dict({'stages': [], 'meta': {'x': deep}}), SpecError, 'nested more than')


def test_huge_json_text_and_many_values():
    refused_quickly(lambda: ArchSpec.from_json(' ' * 2_000_001), SpecError, 'character limit')
    many = {'stages': [], 'meta': {'notes': list(range(50_000))}}
    refused_quickly(lambda: ArchSpec.from_dict(many), SpecError, 'more than 20,000 values')


def test_memory_with_an_absurd_batch():
    refused_quickly(lambda: prof.memory('poolformer_s12', batch_size=10**18), ResourceError, 'batch_size')
    refused_quickly(lambda: prof.memory('poolformer_s12', img_size=10**9), ResourceError, 'img_size')


def test_zip_bomb_checkpoint_is_refused_by_its_directory(tmp_path, monkeypatch):
    monkeypatch.setenv('EXPLORER_MAX_CHECKPOINT_MB', '1')
    bomb = tmp_path / 'bomb.pth'
    with zipfile.ZipFile(bomb, 'w', compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr('archive/data.pkl', b'\0' * (64 * 2**20))  # 64 MiB of zeros in a few kB
    assert bomb.stat().st_size < 2**20
    refused_quickly(lambda: read_checkpoint(bomb), WeightsError, r'unpacks to 64 MiB, over the 1 MiB limit')


@pytest.mark.parametrize(
    'cfg, match',
    [
        ({'crop_pct': 0.002}, 'crop_pct 0.002 is not allowed'),
        ({'crop_pct': float('nan')}, 'crop_pct'),
        ({'pad_from': 13_000}, 'pad_from 13000 is not allowed'),
        ({'interpolation': 'sinc'}, 'interpolation'),
        ({'std': [0.0, 1.0, 1.0]}, 'std'),
        ({'mean': [float('inf'), 0.0, 0.0]}, 'mean'),
    ],
)
def test_checkpoint_preprocessing_that_would_make_a_huge_image(cfg, match):
    spec = ArchSpec.from_dict(tiny_spec())
    info = WeightsInfo('checkpoint', 'an upload', {'input_size': (3, 32, 32), **cfg})
    refused_quickly(lambda: data_config(spec, info), ValueError, match)


def test_a_speed_run_over_the_time_budget_is_refused_before_it_holds_the_slot(monkeypatch):
    monkeypatch.setenv('EXPLORER_MAX_BENCH_S', '0.05')
    msg = refused_quickly(lambda: prof.bench('caformer_s18', batch_size=64), BenchError, 'EXPLORER_MAX_BENCH_S', 20)
    assert 'smaller batch' in msg


def test_a_speed_run_stops_when_its_budget_is_spent(monkeypatch):
    monkeypatch.setenv('EXPLORER_MAX_BENCH_S', '2')
    t0 = time.perf_counter()
    out = prof.bench(json.dumps(tiny_spec()), batch_size=1)
    assert time.perf_counter() - t0 < 8 and out['iters'] >= 1
    torch.set_num_threads(torch.get_num_threads())  # the run leaves the thread count as it found it


def test_a_huge_request_body_is_refused_before_the_app_reads_it(app_url, client):
    """A request announcing 20 MB of JSON to the queue gets 413 at once, before its body is sent or read; one
    that sends more than it announced is cut off; the app still answers the next request."""
    import http.client
    from urllib.parse import urlparse

    url = urlparse(app_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    t0 = time.perf_counter()
    conn.putrequest('POST', '/gradio_api/queue/join')
    conn.putheader('Content-Type', 'application/json')
    conn.putheader('Content-Length', str(20 * 2**20))
    conn.endheaders()  # the body never follows: the answer must not wait for it
    response = conn.getresponse()
    assert response.status == 413 and b'EXPLORER_MAX_REQUEST_MB' in response.read()
    assert time.perf_counter() - t0 < 10
    conn.close()
    assert client.predict(spec='poolformer_s12', api_name='/validate') == []  # still serving


def test_json_the_server_cannot_parse_is_refused_saying_why(app_url):
    """A body with a 5,000-digit number or lists nested 50,000 deep got FastAPI's bare 400 'There was an error
    parsing the body'; it still gets 400, now saying what could not be read. Other HTTP errors are FastAPI's."""
    import httpx

    url = f'{app_url}gradio_api/call/profile'
    headers = {'content-type': 'application/json'}
    big = '{"data": [{"stages": [{"mixer": "pooling", "depth": ' + '9' * 5000 + ', "dim": 16}]}, null]}'
    deep = '{"data": [' + '[' * 50_000 + ']' * 50_000 + ', null]}'
    cut = '{"data": ["caformer_s18"'  # a syntax error got FastAPI's 422 list (an API review)
    for body, why in (
        (big, 'a number has more than 4,300 digits'),
        (deep, 'nested too deeply'),
        (cut, "Expecting ',' delimiter at character 24"),
        ('hello', 'Expecting value at character 0'),
    ):
        r = httpx.post(url, content=body, headers=headers, timeout=30)
        assert r.status_code == 400 and r.json()['error'].startswith('the request body is not JSON the server can')
        assert why in r.json()['error']
    assert httpx.get(f'{app_url}no-such-page', timeout=30).json() == {'detail': 'Not Found'}
    # a form body of bytes that are not UTF-8: FastAPI's 422 failed while echoing them (500, three tracebacks)
    r = httpx.post(url, content=b'\xff\xfe', headers={'content-type': 'application/x-www-form-urlencoded'}, timeout=30)
    assert r.status_code == 422 and r.json()['detail'][0]['loc'] == ['body']
    assert httpx.post(url, json={'data': ['poolformer_s12', None]}, timeout=30).status_code == 200  # still serving


def test_only_gradios_upload_route_is_left_to_its_own_file_limit(app_url):
    """Every path ending in /upload was exempt, so an API call named `upload` (/gradio_api/call/upload) took a
    256 MiB JSON body, read and parsed whole (about 1 GiB of server memory), even without a login."""
    import http.client
    from urllib.parse import urlparse

    from explorer.app.context import is_upload

    url = urlparse(app_url)
    for path in ('/gradio_api/call/upload', '/gradio_api/run/upload', '/gradio_api/upload/', '/x/upload'):
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        conn.putrequest('POST', path)
        conn.putheader('Content-Type', 'application/json')
        conn.putheader('Content-Length', str(256 * 2**20))
        conn.endheaders()  # the body never follows: the answer must not wait for it
        response = conn.getresponse()
        assert response.status == 413, (path, response.status)
        conn.close()
    # an upload over the request limit (16 MiB) still goes to Gradio's own limit (EXPLORER_MAX_UPLOAD_MB)
    data = b'--x\r\nContent-Disposition: form-data; name="files"; filename="big.bin"\r\n'
    data += b'Content-Type: application/octet-stream\r\n\r\n' + b'\0' * (17 * 2**20) + b'\r\n--x--\r\n'
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    conn.request('POST', '/gradio_api/upload', body=data, headers={'Content-Type': 'multipart/form-data; boundary=x'})
    response = conn.getresponse()
    assert response.status == 200 and response.read().decode().endswith('big.bin"]')
    conn.close()
    multipart = [(b'content-type', b'multipart/form-data; boundary=x')]
    assert is_upload({'method': 'POST', 'path': '/gradio_api/upload', 'headers': multipart})
    assert is_upload({'method': 'POST', 'path': '/lab/gradio_api/upload', 'root_path': '/lab', 'headers': multipart})
    assert not is_upload({'method': 'POST', 'path': '/gradio_api/upload', 'headers': []})  # JSON: limited
    assert not is_upload({'method': 'PUT', 'path': '/gradio_api/upload', 'headers': multipart})


def test_a_body_sent_without_its_length_is_cut_off_at_the_limit():
    import asyncio

    from explorer.app.context import BodyLimit

    seen, sent = [], []

    async def app(scope, receive, send):  # as Starlette answers a body that ends in a disconnect
        while True:
            message = await receive()
            seen.append(message['type'])
            if message['type'] == 'http.disconnect':
                await send({'type': 'http.response.start', 'status': 400, 'headers': []})
                await send({'type': 'http.response.body', 'body': b'There was an error parsing the body'})
                return
            if not message.get('more_body'):
                return

    async def quiet_app(scope, receive, send):  # gives up without answering
        while (await receive())['type'] != 'http.disconnect':
            pass

    async def send(message):
        sent.append(message)

    for handler in (app, quiet_app):
        chunks = [{'type': 'http.request', 'body': b'x' * 1000, 'more_body': True} for _ in range(10)]

        async def receive(chunks=chunks):
            return chunks.pop(0)

        sent.clear()
        asyncio.run(BodyLimit(handler, max_bytes=2500)({'type': 'http', 'path': '/x', 'headers': []}, receive, send))
        # the documented 413 (a chunked body over the limit got Starlette's 400 'error parsing the body')
        assert [m.get('status') for m in sent] == [413, None]
        assert b'request body over the 0 MiB limit' in sent[1]['body']
    assert seen == ['http.request', 'http.request', 'http.disconnect']  # the third kilobyte crosses 2,500 bytes
