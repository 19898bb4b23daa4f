"""The review server with a live process on a free loopback port: who may reach it.

A raw WebSocket upgrade (the request Streamlit's page makes to /_stcore/stream) is sent by hand,
so the test sees the status the server gives a DNS-rebinding page (foreign Host and Origin)
and the bound name; HTTP requests check the token gate.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from medrec.review import server

REPO = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-review-token"


def _free_port(host: str = "127.0.0.1") -> int:
    return server.free_port(host)


def _env(token: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != server.TOKEN_ENV}
    if token:
        env[server.TOKEN_ENV] = token
    return env


@contextmanager
def _serving(argv: list[str], base: str, log: Path, env: dict[str, str]):
    """Start a server process, wait for its health endpoint, stop it by its PID afterwards."""
    with log.open("w") as out:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
                        if r.read().strip() == b"ok":
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the review server did not start:\n{log.read_text()}")
                time.sleep(0.3)
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _upgrade(address: str, port: int, host: str, origin: str | None, cookie: str | None = None) -> int:
    """Status code of a WebSocket upgrade of /_stcore/stream sent with these headers."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET /_stcore/stream HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: streamlit",
    ]
    lines += [f"Origin: {origin}"] if origin else []
    lines += [f"Cookie: {cookie}"] if cookie else []
    with socket.create_connection((address, port), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status = s.recv(4096).split(b"\r\n", 1)[0].decode()
    return int(status.split()[1])


def _get(url: str, host: str | None = None, cookie: str | None = None) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, headers={k: v for k, v in (("Host", host), ("Cookie", cookie)) if v})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_websocket_upgrade_needs_the_bound_host(run_dir: Path, tmp_path: Path):
    port = _free_port()
    argv = [sys.executable, "-m", "medrec.review", str(run_dir), "--port", str(port)]
    with _serving(argv, f"http://127.0.0.1:{port}", tmp_path / "server.log", _env()):
        # A page on evil.example whose DNS name now points at 127.0.0.1 (DNS rebinding).
        assert _upgrade("127.0.0.1", port, f"evil.example:{port}", f"http://evil.example:{port}") == 403
        assert _upgrade("127.0.0.1", port, f"127.0.0.1:{port}", f"http://127.0.0.1:{port}") == 101
        assert _upgrade("127.0.0.1", port, f"localhost:{port}", f"http://localhost:{port}") == 101
        # A foreign page on the bound host name still may not open the stream (CORS origin check).
        assert _upgrade("127.0.0.1", port, f"127.0.0.1:{port}", "http://evil.example") == 403
        status, body, _ = _get(f"http://127.0.0.1:{port}/", host=f"evil.example:{port}")
        assert status == 403 and b"<html" not in body.lower()
        assert _get(f"http://127.0.0.1:{port}/")[0] == 200
    out = (tmp_path / "server.log").read_text()
    assert f"http://127.0.0.1:{port}/" in out and "token=" not in out


def test_ipv6_loopback_works(run_dir: Path, tmp_path: Path):
    try:
        port = _free_port("::1")
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    argv = [sys.executable, "-m", "medrec.review", str(run_dir), "--host", "::1", "--port", str(port)]
    with _serving(argv, f"http://[::1]:{port}", tmp_path / "server.log", _env()):
        assert _upgrade("::1", port, f"[::1]:{port}", f"http://[::1]:{port}") == 101
        assert _upgrade("::1", port, f"evil.example:{port}", f"http://evil.example:{port}") == 403
    assert f"http://[::1]:{port}/" in (tmp_path / "server.log").read_text()


def test_non_loopback_bind_without_a_token_is_refused(run_dir: Path, capsys, monkeypatch):
    from medrec.review.__main__ import main

    monkeypatch.delenv(server.TOKEN_ENV, raising=False)
    for host in ("0.0.0.0", "::", "192.0.2.10"):
        assert main([str(run_dir), "--host", host]) == 2
        err = capsys.readouterr().err
        assert "refused without an access token" in err and server.TOKEN_ENV in err
    assert main([str(run_dir), "--host", "0.0.0.0", "--token", "short"]) == 2
    assert "shorter than 8" in capsys.readouterr().err
    assert main([str(run_dir.parent)]) == 2  # not a run folder: a clear error, no server
    assert "no run.json" in capsys.readouterr().err


def test_with_a_token_a_request_without_it_is_refused(run_dir: Path, tmp_path: Path):
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "medrec.review", str(run_dir), "--port", str(port)]
    with _serving(argv, base, tmp_path / "server.log", _env(TOKEN)):
        status, body, _ = _get(f"{base}/")
        assert status == 403 and b"access token" in body and b'name="token"' in body  # the page asks
        assert _get(f"{base}/?token=wrong-{TOKEN}")[0] == 403
        assert _upgrade("127.0.0.1", port, f"127.0.0.1:{port}", base) == 403
        status, body, headers = _get(f"{base}/?token={TOKEN}")
        assert status == 200 and b"<html" in body.lower()
        cookie = headers["set-cookie"].split(";")[0]
        assert TOKEN not in cookie and "HttpOnly" in headers["set-cookie"]
        assert _get(f"{base}/", cookie=cookie)[0] == 200  # the browser's later requests
        assert _upgrade("127.0.0.1", port, f"127.0.0.1:{port}", base, cookie=cookie) == 101
        assert _upgrade("127.0.0.1", port, f"127.0.0.1:{port}", base, cookie="medrec_review_token=forged") == 403
    assert f"{base}/?token={TOKEN}" in (tmp_path / "server.log").read_text()  # the printed URL


def test_streamlit_run_of_apps_entry_uses_the_shipped_config(run_dir: Path, tmp_path: Path):
    """`streamlit run apps/review.py` (run from another folder): apps/.streamlit/config.toml applies."""
    port = _free_port()
    argv = [sys.executable, "-m", "streamlit", "run", str(REPO / "apps" / "review.py"), "--server.port", str(port),
            "--", "--run", str(run_dir)]
    with _serving(argv, f"http://127.0.0.1:{port}", tmp_path / "server.log", _env()):
        assert _upgrade("127.0.0.1", port, f"evil.example:{port}", f"http://evil.example:{port}") == 403
        assert _upgrade("127.0.0.1", port, f"127.0.0.1:{port}", f"http://127.0.0.1:{port}") == 101


def test_shipped_config_matches_the_launchers_settings():
    shipped = tomllib.loads((REPO / "apps" / ".streamlit" / "config.toml").read_text())
    flat = {f"{section}.{k}": v for section, opts in shipped.items() for k, v in opts.items()}
    launched = server.streamlit_config("127.0.0.1", 8501, server.allowed_hosts("127.0.0.1"))
    for key, value in flat.items():
        if key in launched and key != "server.allowedHosts":
            assert launched[key] == value, key
    assert set(flat["server.allowedHosts"]) == set(launched["server.allowedHosts"])
    assert flat["browser.gatherUsageStats"] is False and flat["client.showErrorDetails"] == "none"
    assert flat["server.address"] == "127.0.0.1"


def test_allowed_hosts_and_host_matching():
    assert server.allowed_hosts("127.0.0.1") == ["127.0.0.1", "localhost", "::1"]
    assert server.allowed_hosts("::1")[0] == "::1"
    assert server.allowed_hosts("10.1.2.3", ["review.example.org"]) == ["10.1.2.3", "review.example.org"]
    allowed = server.allowed_hosts("127.0.0.1")
    assert server.host_allowed("127.0.0.1:8501", allowed) and server.host_allowed("[::1]:80", allowed)
    assert server.host_allowed("LOCALHOST.", allowed)
    for bad in ("evil.example", "127.0.0.1.evil.example", "user@127.0.0.1", "", None, "127.0.0.1:99999"):
        assert not server.host_allowed(bad, allowed), bad
