"""The page's own checks for `streamlit run apps/review.py` without the shipped config (AppTest,
with the request's Host header and the bound address set as a live server would report them)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from medrec.review import gate, server

ENTRY = Path(__file__).resolve().parents[2] / "apps" / "review.py"


@pytest.fixture
def page(monkeypatch: pytest.MonkeyPatch, run_dir: Path):
    monkeypatch.setenv("MEDREC_REVIEW_RUN", str(run_dir))
    monkeypatch.delenv(server.TOKEN_ENV, raising=False)

    def start(host: str, address: str) -> AppTest:
        monkeypatch.setattr(gate, "_request_host", lambda: host)
        monkeypatch.setattr(gate, "_bound_address", lambda: address)
        at = AppTest.from_file(str(ENTRY), default_timeout=60).run()
        assert not at.exception
        return at

    return start


def _shows_cases(at: AppTest) -> bool:
    return any(m.value.startswith("### Case ") for m in at.markdown) and len(at.image) == 1


def test_loopback_bind_and_host_show_the_run(page):
    assert _shows_cases(page("127.0.0.1:8501", "127.0.0.1"))
    assert _shows_cases(page("localhost:8501", "127.0.0.1"))


def test_foreign_host_is_refused(page):
    at = page("evil.example:8501", "127.0.0.1")
    assert not _shows_cases(at) and "does not answer to evil" in at.error[0].value.replace("\\", "")


def test_all_interfaces_without_a_token_is_refused(page):
    at = page("localhost:8501", "")  # plain streamlit run: server.address unset = every interface
    assert not _shows_cases(at) and not at.sidebar.markdown
    assert "without an access token" in at.error[0].value and server.TOKEN_ENV in at.error[0].value


def test_with_a_token_the_page_asks_for_it(page, monkeypatch):
    monkeypatch.setenv(server.TOKEN_ENV, "s3cret-review-token")
    at = page("localhost:8501", "")
    assert not _shows_cases(at) and at.text_input(key="_access_token").label == "Access token"
    at.text_input(key="_access_token").input("wrong-token").run()
    assert not _shows_cases(at)
    at.text_input(key="_access_token").input("s3cret-review-token").run()
    assert _shows_cases(at)
