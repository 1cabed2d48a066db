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
        serve.parse_credentials(text, 'EXPLORER_AUTH')


def test_missing_auth_file(fake_launch, tmp_path):
    rc, out, err = run_cli('serve', '--auth-file', str(tmp_path / 'nope'))
    assert rc == 2 and 'does not exist' in err and not fake_launch.launched
