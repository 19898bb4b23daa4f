"""Page-level access checks for a server that was not started by `python -m medrec.review`.

`streamlit run apps/review.py` reads apps/.streamlit/config.toml (loopback bind, allowed hosts,
no usage statistics, no error details); these checks keep the page closed when that file was
bypassed: a Host header that is not the bound name, a non-loopback bind without a token, or a
token (MEDREC_REVIEW_TOKEN) that the visitor has not given.
"""

from __future__ import annotations

import os

import streamlit as st

from medrec.review import server
from medrec.safetext import md

START_HINT = "python -m medrec.review RUN_DIR --host HOST --token TOKEN"


def check_access() -> None:
    """Return when this visitor may see the run; otherwise explain why not and stop the page."""
    if server.GATED:  # python -m medrec.review: ReviewGate checked host and token on the request
        return
    host = _request_host()
    if host is None:  # no browser request behind this run (streamlit.testing, bare mode)
        return
    address = _bound_address()
    allowed = st.get_option("server.allowedHosts") or server.allowed_hosts(address or "0.0.0.0")
    if not server.host_allowed(host, allowed):
        st.error(f"This server does not answer to {md(host)}. Open it by the address it listens on.")
        st.stop()
    token = os.environ.get(server.TOKEN_ENV) or None
    if not server.is_loopback(address) and token is None:
        st.error(
            f"This server listens on {md(address or 'all interfaces')} without an access token, so patient "
            f"images would be open to the network; refused. Start it with `{START_HINT}` (or set "
            f"{server.TOKEN_ENV}), or bind 127.0.0.1."
        )
        st.stop()
    if token is not None and not _token_given(token):
        st.text_input("Access token", type="password", key="_access_token")
        st.info("This review server needs its access token. Ask the person who started it.")
        st.stop()


def _request_host() -> str | None:
    return st.context.headers.get("Host")


def _bound_address() -> str:
    return st.get_option("server.address") or ""


def _token_given(token: str) -> bool:
    if st.session_state.get("_access_ok"):
        return True
    supplied = st.query_params.get("token") or st.session_state.get("_access_token")
    if server.token_ok(supplied, token):
        st.session_state["_access_ok"] = True
        return True
    return False
