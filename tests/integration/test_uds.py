"""`serve --uds PATH`: the daemon answers on a Unix socket as well as on TCP."""

from __future__ import annotations

import json
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import Keys, build_package
from tests.integration.conftest import DaemonFactory
from tests.integration.support import affine, call, make_store, v2_json


class UnixHTTPConnection(HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=30)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self._path))
        self.sock = sock


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # sun_path holds ~107 bytes: pytest's tmp_path can be longer than that
    path = Path(tempfile.mkdtemp(prefix="edge-uds-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_serves_on_a_unix_socket(tmp_path: Path, short_dir: Path, keys: Keys,
                                 daemon_factory: DaemonFactory) -> None:
    pkg = build_package(tmp_path / "pkgs", keys.signer)
    store = make_store(tmp_path / "store", keys, [pkg], {"gemm": "1"})
    sock_path = short_dir / "edge.sock"
    d = daemon_factory(store, "--trusted-keys", str(keys.public), "--uds", str(sock_path)).start()
    assert d.info is not None and d.info.uds == str(sock_path)
    assert stat.S_IMODE(sock_path.stat().st_mode) == 0o660

    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    conn = UnixHTTPConnection(sock_path)
    try:  # several requests on one kept-alive connection
        assert call("", "GET", "/v2/health/ready", conn=conn).json() == {"ready": True}
        reply = call("", "POST", "/v2/models/gemm/infer", json.dumps(v2_json("x", x)).encode(),
                     {"Content-Type": "application/json"}, conn=conn)
        assert reply.status == 200, reply.body
        np.testing.assert_allclose(np.reshape(reply.json()["outputs"][0]["data"], (1, 3)),
                                   affine(pkg, keys, x), rtol=1e-5, atol=1e-6)
        # the socket counts as local: the admin endpoints answer there with the admin token
        admin = {"Authorization": f"Bearer {d.info.admin_token}"}
        models = call("", "GET", "/admin/models", None, admin, conn=conn).json()
        assert [(m["name"], m["version"], m["loaded"]) for m in models] == [("gemm", "1", True)]
        assert "admin token" in call("", "GET", "/admin/models", conn=conn).error(401)
    finally:
        conn.close()
    assert call(d.url, "GET", "/v2/health/live").status == 200  # TCP still serves
