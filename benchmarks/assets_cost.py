"""What asset events and OpenLineage add to ``dbtflow run`` (issue 17's budget: at most 5 %).

On the 100-model layered project, three ways to run it, in rotating order every round so that
drift of a shared machine weighs on all alike: without assets (``--no-assets``: no
``dbt_assets`` task) and without OpenLineage; with assets (the default); with assets and
OpenLineage sending every node's START and COMPLETE to a local HTTP receiver (the provider's
HTTP transport, configured through Airflow's environment). Each run is a new ``dbtflow run``
process on a new DuckDB file; wall and CPU (the process tree) medians; the added cost is the
median over rounds of each round's ratio to the baseline of that round.
``python -m benchmarks.assets_cost`` measures it alone and updates its section of the results.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from benchmarks.harness import BIN, HERE, THREADS, WORK, Result, log, timed_cpu
from benchmarks.projects import Project, projects
from benchmarks.report import replace_section

HEADING = "## Assets and OpenLineage: what they add to `dbtflow run`"
VARIANTS = ("no assets, no lineage", "assets", "assets + OpenLineage")


class _Receiver(BaseHTTPRequestHandler):
    received = 0
    #: Keeps connections open, as a lineage server (Marquez, a collector) does.
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def _run(project: Project, variant: str, receiver_url: str) -> tuple[float, float]:
    database = WORK / "db" / f"assets_cost_{project.path.name}.duckdb"
    database.parent.mkdir(parents=True, exist_ok=True)
    for stale in database.parent.glob(f"{database.name}*"):
        stale.unlink()
    env = {**project.env(database), "DBTFLOW_HOME": str(WORK / "dbtflow-home-assets")}
    env.pop("AIRFLOW__OPENLINEAGE__TRANSPORT", None)
    if variant == VARIANTS[2]:
        transport = {"type": "http", "url": receiver_url, "endpoint": "lineage"}
        env["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps(transport)
        env["AIRFLOW__OPENLINEAGE__NAMESPACE"] = "bench"
    extra = ["--no-assets"] if variant == VARIANTS[0] else ["--assets"]
    dag_id = "bench_assets_cost" + ("_off" if variant == VARIANTS[0] else "")
    command = [
        str(BIN / "dbtflow"), "run", str(project.path), "--threads", THREADS, "--progress", "none",
        "--dag-id", dag_id, *extra,
    ]  # fmt: skip
    return timed_cpu(command, env=env, cwd=project.path)


def measure(project: Project, rounds: int) -> tuple[dict[str, Result], dict[str, list[float]], int]:
    """Each variant's results, each variant's per-round ratio to the baseline, events received."""
    results = {v: Result(v) for v in VARIANTS}
    ratios: dict[str, list[float]] = {v: [] for v in VARIANTS[1:]}
    _Receiver.received = 0
    with _receiver() as url:
        _run(project, VARIANTS[1], url)  # unmeasured: caches (parse, Airflow's database) warm
        for i in range(rounds):
            order = VARIANTS[i % 3 :] + VARIANTS[: i % 3]
            walls: dict[str, float] = {}
            for variant in order:
                wall, cpu = _run(project, variant, url)
                results[variant].seconds.append(wall)
                results[variant].cpu.append(cpu)
                walls[variant] = wall
                log(f"{project.name} {variant} round {i + 1}/{rounds}: {wall:.2f} s, CPU {cpu:.1f} s")
            for variant in VARIANTS[1:]:
                ratios[variant].append(walls[variant] / walls[VARIANTS[0]])
    return results, ratios, _Receiver.received


def update(
    report: str, project: Project, measured: tuple[dict[str, Result], dict[str, list[float]], int]
) -> str:
    results, ratios, received = measured
    rounds = len(results[VARIANTS[0]].seconds)
    lines = [
        HEADING,
        "",
        f"Measured on {date.today().isoformat()}: `dbtflow run` of {project.name} (per_model streamed, "
        f"threads {THREADS}), {rounds} rounds, the three variants in rotating order each round, a new "
        "process and DuckDB file each run. Wall time (CPU of the process tree), median; added = the "
        "median of each round's ratio to that round's run without either. OpenLineage sent to a local "
        f"HTTP receiver ({received} events received in all). Budget (issue 17): at most 5 % added.",
        "",
        "| variant | wall (CPU) | added |",
        "| --- | --- | --- |",
    ]
    for variant in VARIANTS:
        added = "-"
        if ratios.get(variant):
            added = f"{100 * (statistics.median(ratios[variant]) - 1):+.1f} %"
        lines.append(f"| {variant} | {results[variant].cell()} ({results[variant].cpu_cell()}) | {added} |")
    return replace_section(report, HEADING, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", type=Path, default=HERE / "results.md")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    project = projects([100])["n100"]
    measured = measure(project, args.rounds)
    report = args.results.read_text() if args.results.exists() else ""
    args.results.write_text(update(report, project, measured))


if __name__ == "__main__":
    main()
