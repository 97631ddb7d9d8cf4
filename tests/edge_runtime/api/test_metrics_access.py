"""Who may read /metrics, as a table of settings x client x token, and a fuzz: any client
address and Authorization header is let in or refused with Unauthorized, nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.api.metrics_access import check_metrics, is_loopback
from edge_runtime.errors import Unauthorized
from edge_runtime.settings import ServeSettings

INFER = b"Bearer infer"
SCRAPE = b"Bearer scrape"
TOKEN = ServeSettings(token="infer")
SCRAPER = ServeSettings(token="infer", metrics_token="scrape", metrics_open_on_loopback=True)
LOCAL = ServeSettings(token="infer", metrics_open_on_loopback=True)
OPEN = ServeSettings()


@pytest.mark.parametrize(("s", "auth", "client", "allowed"), [
    (TOKEN, None, "127.0.0.1", False), (TOKEN, INFER, "10.0.0.7", True),
    (TOKEN, SCRAPE, "127.0.0.1", False),
    (SCRAPER, SCRAPE, "10.0.0.7", True), (SCRAPER, INFER, "10.0.0.7", False),
    (SCRAPER, None, "127.0.0.1", False),  # its own token, when set, is the only key
    (LOCAL, None, "127.0.0.1", True), (LOCAL, None, "::1", True), (LOCAL, None, None, True),
    (LOCAL, None, "::ffff:127.0.0.1", True), (LOCAL, None, "10.0.0.7", False),
    (LOCAL, INFER, "10.0.0.7", True), (LOCAL, None, "localhost.evil", False),
    (OPEN, None, "10.0.0.7", True),
])
def test_who_may_scrape(s: ServeSettings, auth: bytes | None, client: str | None,
                        allowed: bool) -> None:
    inference = f"Bearer {s.token}".encode() if s.token else None
    if allowed:
        check_metrics(s, auth, client, inference)
    else:
        with pytest.raises(Unauthorized):
            check_metrics(s, auth, client, inference)


@settings(max_examples=300, deadline=None)
@given(client=st.one_of(st.none(), st.text(max_size=45), st.ip_addresses().map(str)),
       auth=st.one_of(st.none(), st.binary(max_size=40)),
       s=st.sampled_from([TOKEN, SCRAPER, LOCAL, OPEN]))
def test_any_client_and_header_is_allowed_or_unauthorized(client: str | None,
                                                          auth: bytes | None,
                                                          s: ServeSettings) -> None:
    try:
        check_metrics(s, auth, client, INFER if s.token else None)
    except Unauthorized:
        assert s is not OPEN
    if client is not None and is_loopback(client):
        assert client.startswith(("127.", "::1", "::ffff:127.", "0:0:0:0:0:0:0:1")) or (
            "::" in client)
