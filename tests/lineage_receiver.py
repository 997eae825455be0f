"""A local HTTP receiver for OpenLineage events (what the provider's HTTP transport posts), shared
by the tests that check the events a run sends, in ``dag.test()`` and from ``dbtflow run``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

NAMESPACE = "dbtflow_tests"


@dataclass
class Receiver:
    """The receiver's address and every event it got, in order."""

    url: str
    events: list[dict[str, Any]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        """Airflow's configuration that points the OpenLineage provider at this receiver."""
        transport = {"type": "http", "url": self.url, "endpoint": "lineage"}
        return {
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": NAMESPACE,
        }

    def node_events(self, dag_id: str) -> dict[str, list[dict[str, Any]]]:
        """The events of each dbt node of a DAG's runs (job ``<dag_id>.<unique id>``)."""
        found: dict[str, list[dict[str, Any]]] = {}
        for event in self.events:
            name = str(event["job"]["name"])
            if name.startswith(f"{dag_id}.") and "." in name[len(dag_id) + 1 :]:
                found.setdefault(name[len(dag_id) + 1 :], []).append(event)
        return found


@contextmanager
def lineage_receiver() -> Iterator[Receiver]:
    """Receive events on a free local port until the block ends."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Receiver(f"http://127.0.0.1:{server.server_port}", received)
    finally:
        server.shutdown()
        server.server_close()
