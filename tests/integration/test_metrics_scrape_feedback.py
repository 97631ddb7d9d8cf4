"""A real daemon: /metrics parsed by prometheus_client after real traffic and feedback; who may
scrape it (metrics_token, metrics_open_on_loopback, else the inference token); the README's
feedback example, answer included; feedback and one definition of rates in `status`; an
unknown EDGE_* variable warned about at start; settings given as EDGE_* variables applied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_runtime.cli_models import _status_text
from tests.conftest import Keys, build_package
from tests.integration.conftest import DaemonFactory, DaemonProc
from tests.integration.support import call, edge, make_store, post_json, v2_json

X = np.array([[1, 2, 3, 4], [-1, 0.5, 2, -3]], dtype=np.float32)
H = "edge_request_duration_seconds"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Path:
    tmp = tmp_path_factory.mktemp("scrape")
    return make_store(tmp / "store", keys, [build_package(tmp / "pkgs", keys.signer)],
                      {"gemm": "1"})


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def _get(d: DaemonProc, path: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return call(d.url, "GET", path, None, headers).status


def test_metrics_token_is_the_only_key_to_metrics(store: Path, keys: Keys,
                                                  daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(store, "--trusted-keys", str(keys.public), "--token", "infer",
                       env={"EDGE_METRICS_TOKEN": "scrape"}).start()
    assert _get(d, "/metrics", "scrape") == 200
    assert [_get(d, "/metrics", t) for t in (None, "infer", "wrong")] == [401, 401, 401]
    assert _get(d, "/v2", "scrape") == 401  # the scraper's token opens nothing else
    assert _get(d, "/v2", "infer") == 200


def test_metrics_open_on_loopback_needs_no_token(store: Path, keys: Keys,
                                                 daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(store, "--trusted-keys", str(keys.public), "--token", "infer",
                       "--metrics-open-on-loopback").start()
    assert _get(d, "/metrics") == 200
    assert _get(d, "/v2") == 401
    assert call(d.url, "POST", "/metrics", b"{}").status == 401  # only GET is opened


def test_traffic_feedback_metrics_and_status_agree(store: Path, keys: Keys,
                                                   daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(store, "--trusted-keys", str(keys.public),
                       env={"EDGE_BOGUS_SETTING": "1", "EDGE_INTRA_OP_THREADS": "1"}).start()
    ids = {"model": "gemm", "version": "1"}
    key = tuple(sorted(ids.items()))
    answer = post_json(d.url, "/v2/models/gemm/infer", v2_json("x", X, id="req-17"))
    assert answer.status == 200
    out = answer.json()["outputs"][0]
    predicted = np.asarray(out["data"]).reshape(out["shape"]).argmax(axis=1).tolist()
    for _ in range(4):
        assert post_json(d.url, "/predict/gemm", X.tolist()).status == 200
    assert post_json(d.url, "/predict/gemm", [[1, 2]]).status == 400

    # the README's feedback example: by request id, then with the predictions
    by_id = post_json(d.url, "/v2/models/gemm/feedback", {"id": "req-17", "labels": predicted})
    assert by_id.json() == {"accepted": 2, "correct": 2, "version": "1"}
    with_preds = post_json(d.url, "/v2/models/gemm/feedback",
                           {"predictions": [3, 5], "labels": [3, 8]})
    assert with_preds.json() == {"accepted": 2, "correct": 1, "version": "1"}
    for bad in ({"id": "never-sent", "labels": [1]}, {"predictions": [1, 2], "labels": [1]},
                {"labels": "x"}):
        assert "error" in post_json(d.url, "/v2/models/gemm/feedback", bad).json()

    metrics = _samples(call(d.url, "GET", "/metrics").body.decode())
    assert metrics[("edge_requests_total", key)] == 6
    assert metrics[(f"{H}_count", key)] == 5
    assert metrics[(f"{H}_bucket", tuple(sorted({**ids, "le": "+Inf"}.items())))] == 5
    assert metrics[("edge_feedback_total", key)] == 4
    assert metrics[("edge_feedback_correct_total", key)] == 3
    assert not any("rps" in name or "quantile" in name for name, _ in metrics)

    assert d.info is not None
    doc: dict[str, Any] = d.admin().call("GET", "/admin/status")
    assert doc["feedback"] == [{"model": "gemm", "version": "1", "labels": 4, "correct": 3,
                                "accuracy": 0.75}]
    assert doc["settings"]["threads"] == 1  # EDGE_INTRA_OP_THREADS was applied
    text = _status_text(doc)
    for rows in doc["windows"].values():  # the text prints the document's own rate
        (row,) = rows
        assert row["requests"] == 6
        assert f"{row['throughput_rps']:.4g}" in text
    assert "feedback:" in text and "0.75" in text

    shown = edge("status", "--store", store)
    assert shown.returncode == 0 and "feedback:" in shown.stdout
    as_json = json.loads(edge("status", "--store", store, "--json").stdout)
    assert as_json["feedback"][0]["labels"] == 4
    assert d.stop() == 0
    log = d.log.read_text()
    assert "ignoring EDGE_BOGUS_SETTING" in log
    offline = json.loads(edge("status", "--store", store, "--json").stdout)  # from the store
    assert offline["source"].startswith("store")
    assert offline["feedback"] == doc["feedback"]
    assert "feedback:" in edge("status", "--store", store).stdout
