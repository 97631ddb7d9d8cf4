"""Who may scrape ``GET /metrics``: scrapers rarely hold the inference token.

``metrics_token`` set: that bearer token, and only it. Else ``metrics_open_on_loopback``: no
token from a loopback address or the Unix socket. Else (the default) the same rule as every
other route: the inference token when one is set.
"""

from __future__ import annotations

import hmac
import ipaddress

from edge_runtime.errors import Unauthorized
from edge_runtime.settings import ServeSettings


def is_loopback(client: str | None) -> bool:
    """None is the Unix socket (no peer address): local, like loopback."""
    if client is None:
        return True
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


def check_metrics(settings: ServeSettings, authorization: bytes | None, client: str | None,
                  inference_token: bytes | None) -> None:
    """Raise ``Unauthorized`` unless this request may read /metrics."""
    if settings.metrics_token:
        expected = f"Bearer {settings.metrics_token}".encode()
        if authorization is None or not hmac.compare_digest(authorization, expected):
            raise Unauthorized("/metrics needs the metrics token (metrics_token)")
        return
    if settings.metrics_open_on_loopback and is_loopback(client):
        return
    if inference_token is not None and not (
            authorization is not None and hmac.compare_digest(authorization, inference_token)):
        raise Unauthorized()
