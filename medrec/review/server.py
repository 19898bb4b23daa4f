"""Serving the review app so that only its users reach it.

`serve` runs the page (medrec/review/page/review_page.py) as a Streamlit `st.App` in this
process with:
- `server.allowedHosts` = the names it binds, so a page elsewhere that rebinds its own DNS
  name to this machine (DNS rebinding) gets 403 on the WebSocket and on every HTTP request;
- usage statistics off and `client.showErrorDetails = "none"` (no tracebacks, no server paths);
- `ReviewGate`, an ASGI middleware that checks the Host header on every request and, when a
  token is set, the token: as `?token=` (then remembered in an HttpOnly, SameSite=Strict
  cookie) or the cookie. A request without it gets 403 and a page that asks for it.
A non-loopback address needs a token (`--token` or MEDREC_REVIEW_TOKEN).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import sys
from collections.abc import Iterable, Sequence
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

TOKEN_ENV = "MEDREC_REVIEW_TOKEN"
COOKIE = "medrec_review_token"
PAGE = Path(__file__).resolve().parent / "page" / "review_page.py"
OPEN_PATHS = ("/_stcore/health",)  # says "ok" and nothing else; lets scripts wait for startup
GATED = False  # True once `serve` runs: the page then leaves host and token checks to ReviewGate


def is_loopback(host: str | None) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    return host.strip("[]") in ("0.0.0.0", "::", "")


def allowed_hosts(host: str, extra: Iterable[str] = ()) -> list[str]:
    """The Host names a browser may use for a server bound to `host`: the address itself, and
    localhost for loopback; for a wildcard bind, this machine's names and addresses."""
    names = [] if is_wildcard(host) else [host.strip("[]")]
    if is_loopback(host) or is_wildcard(host):
        names += ["localhost", "127.0.0.1", "::1"]
    if is_wildcard(host):
        fqdn, short = socket.getfqdn(), socket.gethostname()
        names += [short, fqdn]
        try:
            names += [info[4][0] for info in socket.getaddrinfo(short, None)]
        except OSError:
            pass
    names += [e.strip().lower() for e in extra if e.strip()]
    return list(dict.fromkeys(n.lower() for n in names if n))


def host_allowed(host_header: str | None, allowed: Sequence[str]) -> bool:
    """Whether a Host header (name or [v6], optional port) names one of `allowed`."""
    if not host_header:
        return False
    try:
        parsed = urlparse(f"//{host_header}")
        name, _ = parsed.hostname, parsed.port
    except ValueError:
        return False
    if not name or parsed.username or parsed.password or parsed.path:
        return False
    return name.lower().rstrip(".") in {a.lower().rstrip(".") for a in allowed}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (IPv4 or IPv6)."""
    family = socket.getaddrinfo(host.strip("[]"), None, type=socket.SOCK_STREAM)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host.strip("[]"), 0))
        return int(s.getsockname()[1])


def url(host: str, port: int, token: str | None) -> str:
    """The URL to print: `host` as bound (wildcards as this machine's name), with the token."""
    name = socket.getfqdn() if is_wildcard(host) else host.strip("[]")
    name = f"[{name}]" if ":" in name else name
    return f"http://{name}:{port}/" + (f"?token={token}" if token else "")


def cookie_value(token: str) -> str:
    # The cookie holds a digest, so the token itself is not stored in the browser's cookie jar.
    return hmac.new(token.encode(), b"medrec-review-cookie", hashlib.sha256).hexdigest()


def token_ok(supplied: str | None, token: str) -> bool:
    return bool(supplied) and hmac.compare_digest(str(supplied).encode(), token.encode())


_ASK_PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><title>medrec review</title></head>
<body style="font-family:sans-serif;max-width:32rem;margin:4rem auto">
<h2>medrec review: access token needed</h2>
<p>This review server only opens with its access token. Ask the person who started it
(the URL it printed carries the token).</p>
<form method="get" action="/"><input type="password" name="token" autofocus placeholder="access token"
 style="width:20rem"> <button type="submit">Open</button></form></body></html>"""


class ReviewGate:
    """ASGI middleware: refuse foreign Host headers and, with a token, requests without it."""

    def __init__(self, app: Any, *, allowed: Sequence[str], token: str | None = None):
        self.app, self.allowed, self.token = app, list(allowed), token or None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if not host_allowed(headers.get("host"), self.allowed):
            return await _refuse(scope, receive, send, b"Host not allowed\n", "text/plain")
        if self.token is None or scope.get("path") in OPEN_PATHS:
            return await self.app(scope, receive, send)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
        cookie = SimpleCookie(headers.get("cookie", "")).get(COOKIE)
        if token_ok(query, self.token):
            return await self.app(scope, receive, _with_cookie(send, cookie_value(self.token)))
        if cookie is not None and token_ok(cookie.value, cookie_value(self.token)):
            return await self.app(scope, receive, send)
        return await _refuse(scope, receive, send, _ASK_PAGE, "text/html; charset=utf-8")


def _with_cookie(send: Any, value: str) -> Any:
    async def wrapped(message: dict) -> None:
        if message["type"] == "http.response.start":
            cookie = f"{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict"
            message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie.encode())]}
        await send(message)

    return wrapped


async def _refuse(scope: dict, receive: Any, send: Any, body: bytes, content_type: str) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect; closing before accept makes the server answer 403
        await send({"type": "websocket.close", "code": 1008})
        return
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": 403, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def streamlit_config(host: str, port: int, allowed: Sequence[str]) -> dict[str, Any]:
    """The Streamlit options `serve` sets (the same as apps/.streamlit/config.toml, plus the bind)."""
    return {
        "server.address": host.strip("[]"),
        "server.port": port,
        "server.headless": True,
        "server.fileWatcherType": "none",
        "server.runOnSave": False,
        "server.allowedHosts": list(allowed),
        "server.enableCORS": True,
        "server.enableXsrfProtection": True,
        "browser.gatherUsageStats": False,
        "browser.serverAddress": host.strip("[]") if not is_wildcard(host) else socket.getfqdn(),
        "browser.serverPort": port,
        "client.showErrorDetails": "none",
        "client.toolbarMode": "minimal",
    }


def serve(host: str, port: int, *, token: str | None, allowed: Sequence[str]) -> None:
    """Run the review page until stopped (Ctrl+C / SIGTERM); the run comes from the environment."""
    global GATED
    import streamlit as st
    from starlette.middleware import Middleware

    GATED = True
    # App.run takes sys.argv[0] as the launcher and puts its folder first on sys.path: make that
    # the page's own folder, not medrec/review (whose module names could shadow others).
    sys.argv = [str(PAGE)]
    app = st.App(str(PAGE), middleware=[Middleware(ReviewGate, allowed=allowed, token=token)])
    app.run(config=streamlit_config(host, port, allowed))
