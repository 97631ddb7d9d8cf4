"""Alert hooks: every alert is POSTed to the webhook and piped into the command."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from edge_runtime.protocol import messages as m
from fleet.alerts import Alerter
from fleet.core import Fleet
from fleet.settings import ManagerSettings


def test_webhook_and_command_receive_the_alert(tmp_path: Path) -> None:
    received: list[dict[str, object]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out = tmp_path / "alert.json"
    script = f"import sys; open({str(out)!r}, 'w').write(sys.stdin.read())"
    fleet = Fleet(ManagerSettings(db=tmp_path / "fleet.db", artifacts=tmp_path / "art"))
    published: list[tuple[str, bytes]] = []

    async def publish(topic: str, body: bytes) -> None:
        published.append((topic, body))

    alerter = Alerter(fleet, fleet.drift, publish,
                      webhook=f"http://127.0.0.1:{server.server_port}/hook",
                      command=f"{sys.executable} -c \"{script}\"")
    alert = m.Alert("drift", "alert", "digits", "3", "x[0]: psi 0.4 >= 0.25")
    asyncio.run(alerter.deliver(alert))
    server.shutdown()
    server.server_close()
    assert published[0][0] == "edge/v1/default/alerts/drift"
    assert received and received[0]["kind"] == "drift" and received[0]["severity"] == "alert"
    assert json.loads(out.read_text())["message"] == "x[0]: psi 0.4 >= 0.25"
