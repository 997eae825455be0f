"""Synthetic dbt projects for the benchmarks (our own generator), one shape per question.

- ``generate(path, n)``: layered, N models in about 10 layers: the first layer (about 10 %) are
  staging views reading ``range()`` or a seed; every later model refs 1-3 models of earlier
  layers (mostly the previous one), alternating views and tables; about 30 % of the models carry
  a ``not_null`` test. The same ``seed`` gives the same project. ``tables``, ``rows`` and
  ``layers`` make the other layered shapes: "heavy" (70 % tables over many more rows, so the
  warehouse's work dominates dbt's overhead) and "wide" (2 layers: many independent models,
  where dbt's thread parallelism, not the DAG's depth, sets the pace).
- ``chain(path, n)``: N tables, each selecting from the previous one, the first from a seed: the
  deepest possible DAG, where every hand-off between nodes is on the critical path.
- ``mixed(path)``: the bundled bikeshare example with a custom-schema folder added: 14 nodes of
  every kind (seeds, a snapshot, an incremental and an ephemeral model, a custom schema).
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

LAYERS = 10
PROFILE = (
    "synth:\n  target: bench\n  outputs:\n    bench:\n      type: duckdb\n"
    "      path: \"{{ env_var('SYNTH_DUCKDB', 'synth.duckdb') }}\"\n      threads: 2\n"
)
SEED = "id,v\n" + "".join(f"{i},{i * 7 % 13}\n" for i in range(200))


def _layer_sizes(n: int, layers: int = LAYERS) -> list[int]:
    first = max(1, n // 10)
    rest = n - first
    per_layer = [rest // (layers - 1)] * (layers - 1)
    for i in range(rest % (layers - 1)):
        per_layer[i] += 1
    return [first, *per_layer]


def _staging_sql(from_range: bool, rows: int) -> str:
    if from_range:
        return f"select range as id, range % 97 as v from range({rows})"
    if rows <= 1000:
        return "select id, v from {{ ref('base_values') }}"
    # The seed's 200 rows, repeated to about ``rows`` rows with distinct ids.
    return (
        "select r.range * 200 + b.id as id, b.v\n"
        f"from {{{{ ref('base_values') }}}} as b cross join range({rows // 200}) as r"
    )


def generate(
    path: Path,
    n: int,
    *,
    seed: int = 42,
    tables: float = 0.5,
    rows: int = 1000,
    layers: int = LAYERS,
    name: str | None = None,
) -> Path:
    """Write the layered project into ``path`` (replacing it) and return ``path``.

    ``tables``: the share of non-staging models materialized as tables (the rest are views);
    ``rows``: rows of each staging model (and so of every model, joins keep the first parent's).
    """
    rng = random.Random(seed)
    shutil.rmtree(path, ignore_errors=True)
    models = path / "models"
    (path / "seeds").mkdir(parents=True)
    project = name or f"synth_{n}"
    (path / "dbt_project.yml").write_text(
        f"name: {project}\nversion: '1.0.0'\nprofile: synth\n"
        "models:\n  +materialized: view\n"
        f"  {project}:\n    layer_0:\n      +tags: ['staging']\n"
    )
    (path / "profiles.yml").write_text(PROFILE)
    (path / "seeds" / "base_values.csv").write_text(SEED)

    built: list[list[str]] = []
    tests: list[str] = []
    for depth, size in enumerate(_layer_sizes(n, layers)):
        folder = models / f"layer_{depth}"
        folder.mkdir(parents=True)
        names = [f"m{depth}_{i}" for i in range(size)]
        for model in names:
            if depth == 0:
                sql = _staging_sql(rng.random() < 0.5, rows)
                config = ""
            else:
                pool_prev = built[-1]
                pool_any = [m for layer in built for m in layer]
                parents = {rng.choice(pool_prev)}
                for _ in range(rng.randint(0, 2)):
                    parents.add(rng.choice(pool_any))
                first, *others = sorted(parents)
                joins = "".join(
                    f"\nleft join {{{{ ref('{p}') }}}} as p{k} using (id)" for k, p in enumerate(others, 1)
                )
                total = " + ".join(["p0.v", *(f"coalesce(p{k}.v, 0)" for k in range(1, len(others) + 1))])
                sql = f"select p0.id, {total} as v\nfrom {{{{ ref('{first}') }}}} as p0{joins}"
                config = "{{ config(materialized='table') }}\n" if rng.random() < tables else ""
            (folder / f"{model}.sql").write_text(config + sql + "\n")
            if rng.random() < 0.3:
                tests.append(model)
        built.append(names)
    _write_tests(models, tests)
    return path


def _write_tests(models: Path, tested: list[str]) -> None:
    schema = ["version: 2", "models:"]
    for model in tested:
        schema += [f"  - name: {model}", "    columns:", "      - name: id", "        data_tests: [not_null]"]
    (models / "_tests.yml").write_text("\n".join(schema) + "\n")


def heavy(path: Path, n: int, *, rows: int = 600_000) -> Path:
    """Layered, 10 layers, about 70 % tables, ``rows`` rows per model (plain ``dbt build``
    about 15-20 s at N=100 on 2 cores)."""
    return generate(path, n, tables=0.7, rows=rows, name=f"heavy_{n}")


def wide(path: Path, n: int) -> Path:
    """Layered in 2 layers: about 10 % staging views, the rest independent of each other."""
    return generate(path, n, layers=2, name=f"wide_{n}")


def chain(path: Path, n: int, *, rows: int = 1000) -> Path:
    """A linear chain of ``n`` tables: ``c0`` selects from a seed, ``c{i}`` from ``c{i-1}``."""
    shutil.rmtree(path, ignore_errors=True)
    models = path / "models"
    models.mkdir(parents=True)
    (path / "seeds").mkdir()
    (path / "dbt_project.yml").write_text(
        f"name: chain_{n}\nversion: '1.0.0'\nprofile: synth\nmodels:\n  +materialized: table\n"
    )
    (path / "profiles.yml").write_text(PROFILE)
    (path / "seeds" / "base_values.csv").write_text(SEED)
    repeat = max(1, rows // 200)
    (models / "c0.sql").write_text(
        "select r.range * 200 + b.id as id, b.v\n"
        f"from {{{{ ref('base_values') }}}} as b cross join range({repeat}) as r\n"
    )
    for i in range(1, n):
        (models / f"c{i}.sql").write_text(f"select id, v + 1 as v from {{{{ ref('c{i - 1}') }}}}\n")
    return path


#: The models added to bikeshare (3 seeds, a snapshot, 8 models) for a custom schema: 14 nodes.
MIXED_EXTRA = {
    "trips_by_rider_type.sql": (
        "select rider_type, count(*) as trips, sum(duration_minutes) as minutes\n"
        "from {{ ref('fct_trips') }}\ngroup by 1\n"
    ),
    "station_capacity_history.sql": (
        "select station_id, station_name, capacity, dbt_valid_from, dbt_valid_to\n"
        "from {{ ref('stations_snapshot') }}\n"
    ),
}


def mixed(path: Path, example: Path) -> Path:
    """The bikeshare ``example`` plus a ``reporting`` folder built into its own schema."""
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(example, path, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*"))
    folder = path / "models" / "reporting"
    folder.mkdir()
    for file_name, sql in MIXED_EXTRA.items():
        (folder / file_name).write_text(sql)
    project_file = path / "dbt_project.yml"
    text = project_file.read_text()
    marker = "    marts:\n"
    assert marker in text, "the bikeshare example's dbt_project.yml changed shape"
    custom = "    reporting:\n      +materialized: table\n      +schema: reporting\n"
    project_file.write_text(text.replace(marker, custom + marker))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("path", type=Path)
    parser.add_argument("n", type=int)
    parser.add_argument("--shape", choices=["layered", "heavy", "wide", "chain"], default="layered")
    args = parser.parse_args()
    {"layered": generate, "heavy": heavy, "wide": wide, "chain": chain}[args.shape](args.path, args.n)
    print(f"wrote {args.n} models ({args.shape}) to {args.path}")


if __name__ == "__main__":
    main()
