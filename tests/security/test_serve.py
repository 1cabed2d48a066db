"""`explorer serve` asks for a login when given one, and says so when it serves the network without one."""

from __future__ import annotations

import pytest

from explorer.app import serve
from explorer.core.errors import UserError
from tests.conftest import run_cli


class FakeDemo:
    launched: dict = {}

    def launch(self, **kwargs):
        FakeDemo.launched = kwargs


@pytest.fixture
def fake_launch(monkeypatch):
    import explorer.app.main

    monkeypatch.setattr(explorer.app.main, 'build_demo', lambda: FakeDemo())
    monkeypatch.delenv(serve.AUTH_ENV, raising=False)
    FakeDemo.launched = {}
    return FakeDemo


def test_network_without_login_warns(fake_launch):
    rc, out, err = run_cli('serve', '--host', '0.0.0.0', '--port', '7999')
    assert rc == 0 and 'without a login' in err and fake_launch.launched['auth'] is None
    rc, out, err = run_cli('serve', '--port', '7999')
    assert rc == 0 and 'without a login' not in err  # this machine only: no warning


def test_login_from_a_file_or_the_environment(fake_launch, tmp_path, monkeypatch):
    f = tmp_path / 'users'
    f.write_text('# lab\nalice:s3cret\nbob:pa:ss\n')
    rc, out, err = run_cli('serve', '--host', '0.0.0.0', '--auth-file', str(f))
    assert rc == 0 and 'without a login' not in err
    assert fake_launch.launched['auth'] == [('alice', 's3cret'), ('bob', 'pa:ss')]
    monkeypatch.setenv(serve.AUTH_ENV, 'carol:pw')
    run_cli('serve', '--host', '0.0.0.0')
    assert fake_launch.launched['auth'] == [('carol', 'pw')]


@pytest.mark.parametrize('text, message', [('alice', 'entry 1 is not user:password'), ('', 'no user:password')])
def test_bad_credentials_are_refused(text, message):
    with pytest.raises(UserError, match=message):
        serve.parse_credentials(text, 'EXPLORER_AUTH', lines=False)


def test_an_auth_file_is_read_line_by_line_with_commas_inside_passwords(fake_launch, tmp_path):
    """The file was split on commas too: the line alice:s3cret,admin:admin made a working admin/admin login
    nobody wrote, and refused alice's real password. A Notepad byte-order mark became part of the first user's
    name (who could then never log in), errors counted comma pieces rather than lines, and a user named twice
    silently kept the last password."""
    f = tmp_path / 'users'
    f.write_text('\ufeffalice:s3cret,admin:admin\n\n# bob next\nbob:correct,horse  \n', encoding='utf-8')
    rc, out, err = run_cli('serve', '--host', '0.0.0.0', '--auth-file', str(f))
    assert rc == 0 and fake_launch.launched['auth'] == [('alice', 's3cret,admin:admin'), ('bob', 'correct,horse')]
    f.write_text('alice:one\n\nbob\n', encoding='utf-8')
    rc, out, err = run_cli('serve', '--auth-file', str(f))
    assert rc == 2 and 'line 3 is not user:password' in err
    f.write_text('alice:one\nalice:two\n', encoding='utf-8')
    rc, out, err = run_cli('serve', '--auth-file', str(f))
    assert rc == 2 and "line 2 names user 'alice' again (line 1)" in err


def test_missing_auth_file(fake_launch, tmp_path):
    rc, out, err = run_cli('serve', '--auth-file', str(tmp_path / 'nope'))
    assert rc == 2 and 'does not exist' in err and not fake_launch.launched


@pytest.mark.parametrize('separator', ['\x85', '\u2028', '\u2029', '\x0c', '\x0b', '\x1e'])
def test_a_password_is_not_split_at_other_unicode_line_breaks(separator):
    """str.splitlines() also breaks at these: one line 'alice:s3cret<sep>admin:admin' made an admin/admin login."""
    assert serve.parse_credentials(f'alice:s3cret{separator}admin:admin\n', 'users') == [
        ('alice', f's3cret{separator}admin:admin')
    ]


def test_a_served_app_with_a_login_refuses_requests_without_it(tmp_path):
    """The tests above check what `explorer serve` hands to launch(); this one runs the real command and asks
    the real server: without the login the page's config and the API are refused, with it the API answers."""
    import os
    import subprocess
    import sys
    import time

    import httpx

    from tests.conftest import free_port

    users = tmp_path / 'users'
    users.write_text('alice:s3cret\n')
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != serve.AUTH_ENV}
    proc = subprocess.Popen(
        [sys.executable, '-m', 'explorer', 'serve', '--port', str(port), '--auth-file', str(users)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f'http://127.0.0.1:{port}'
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(url + '/', timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, 'the server did not start in 120 s'
                time.sleep(0.5)
        assert httpx.get(url + '/config', timeout=10).status_code == 401
        assert httpx.get(url + '/gradio_api/info', timeout=10).status_code == 401
        call = httpx.post(url + '/gradio_api/call/validate', json={'data': ['poolformer_s12']}, timeout=10)
        assert call.status_code == 401
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.post('/login', data={'username': 'alice', 'password': 'wrong'}).status_code == 400
            assert c.post('/login', data={'username': 'alice', 'password': 's3cret'}).status_code == 200
            assert c.get('/config').status_code == 200
            event = c.post('/gradio_api/call/validate', json={'data': ['poolformer_s12']})
            assert event.status_code == 200
            answer = c.get(f'/gradio_api/call/validate/{event.json()["event_id"]}').text
            assert 'event: complete' in answer and 'data: [[]]' in answer
    finally:
        proc.terminate()
        proc.wait(timeout=30)
