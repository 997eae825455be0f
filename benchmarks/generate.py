"""Synthetic layered dbt projects for the benchmarks (our own generator).

``generate(path, n)`` writes a DuckDB project with ``n`` models in about 10 layers: the first
layer (about 10 %) are staging views reading ``range()`` or a seed; every later model refs 1-3
models of earlier layers (mostly the previous one), alternating views and tables; about 30 % of
the models carry a ``not_null`` test. The same ``seed`` gives the same project.
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

LAYERS = 10


def _layer_sizes(n: int) -> list[int]:
    first = max(1, n // 10)
    rest = n - first
    per_layer = [rest // (LAYERS - 1)] * (LAYERS - 1)
    for i in range(rest % (LAYERS - 1)):
        per_layer[i] += 1
    return [first, *per_layer]


def generate(path: Path, n: int, *, seed: int = 42) -> Path:
    """Write the project into ``path`` (replacing it) and return ``path``."""
    rng = random.Random(seed)
    shutil.rmtree(path, ignore_errors=True)
    models = path / "models"
    (path / "seeds").mkdir(parents=True)
    (path / "dbt_project.yml").write_text(
        f"name: synth_{n}\nversion: '1.0.0'\nprofile: synth\n"
        "models:\n  +materialized: view\n"
        f"  synth_{n}:\n    layer_0:\n      +tags: ['staging']\n"
    )
    (path / "profiles.yml").write_text(
        "synth:\n  target: bench\n  outputs:\n    bench:\n      type: duckdb\n"
        "      path: \"{{ env_var('SYNTH_DUCKDB', 'synth.duckdb') }}\"\n      threads: 2\n"
    )
    (path / "seeds" / "base_values.csv").write_text(
        "id,v\n" + "".join(f"{i},{i * 7 % 13}\n" for i in range(200))
    )

    layers: list[list[str]] = []
    tests: list[str] = []
    for depth, size in enumerate(_layer_sizes(n)):
        folder = models / f"layer_{depth}"
        folder.mkdir(parents=True)
        names = [f"m{depth}_{i}" for i in range(size)]
        for name in names:
            if depth == 0:
                if rng.random() < 0.5:
                    sql = "select range as id, range % 97 as v from range(1000)"
                else:
                    sql = "select id, v from {{ ref('base_values') }}"
                config = ""
            else:
                pool_prev = layers[-1]
                pool_any = [m for layer in layers for m in layer]
                parents = {rng.choice(pool_prev)}
                for _ in range(rng.randint(0, 2)):
                    parents.add(rng.choice(pool_any))
                first, *others = sorted(parents)
                joins = "".join(
                    f"\nleft join {{{{ ref('{p}') }}}} as p{k} using (id)" for k, p in enumerate(others, 1)
                )
                total = " + ".join(["p0.v", *(f"coalesce(p{k}.v, 0)" for k in range(1, len(others) + 1))])
                sql = f"select p0.id, {total} as v\nfrom {{{{ ref('{first}') }}}} as p0{joins}"
                config = "{{ config(materialized='table') }}\n" if rng.random() < 0.5 else ""
            (folder / f"{name}.sql").write_text(config + sql + "\n")
            if rng.random() < 0.3:
                tests.append(name)
        layers.append(names)
    schema = ["version: 2", "models:"]
    for name in tests:
        schema += [f"  - name: {name}", "    columns:", "      - name: id", "        data_tests: [not_null]"]
    (models / "_tests.yml").write_text("\n".join(schema) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path)
    parser.add_argument("n", type=int)
    args = parser.parse_args()
    generate(args.path, args.n)
    print(f"wrote {args.n} models to {args.path}")


if __name__ == "__main__":
    main()
