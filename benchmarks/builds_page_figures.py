"""The builds page benchmark (benchmarks/builds_page.py) as the harness's figures."""

from __future__ import annotations

from .builds_page import collect
from .common import Figure, say

GOAL_MS = 200.0


def figures(report: dict) -> list[Figure]:
    rows = next(iter(report["results"].values()))
    by_url = {row["url"].split("?")[0] + ("?" + row["url"].split("?")[1] if "?" in row["url"] else ""): row
              for row in rows}  # fmt: skip
    baseline = by_url["/api/v2/dags?limit=100"]
    base_ms = baseline["server_ms"]["median"]
    out = []
    wanted = [
        ("/flatcar/", f"builds page /flatcar/ ({report['builds']:,} builds, {report['branches']} branches)"),
        ("/flatcar/api/builds?limit=100", "builds API /flatcar/api/builds?limit=100"),
        ("/flatcar/api/builds?limit=1000", "builds API /flatcar/api/builds?limit=1000"),
    ]
    for url, name in wanted:
        row = by_url[url]
        stats = row["server_ms"] or row["wall_ms"]
        out.append(
            Figure(
                benchmark="builds_page",
                name=f"{name}, server time",
                value=stats["median"],
                minimum=stats["min"],
                unit="ms",
                runs=stats["n"],
                baseline=f"Airflow's /api/v2/dags ({report['dags']} DAGs), same api-server",
                baseline_value=base_ms,
                ratio=round(stats["median"] / base_ms, 2) if base_ms else None,
                goal=f"< {GOAL_MS:.0f} ms" if url == "/flatcar/" else "",
                met=stats["median"] < GOAL_MS if url == "/flatcar/" else None,
                extra={"p90": stats["p90"], "bytes": row["bytes"]},
            )
        )
    return out


def run(smoke: bool = False, builds: int = 1000, branches: int = 10) -> list[Figure]:
    if smoke:
        builds, branches = 20, 2
    repeat, warmup = (3, 1) if smoke else (30, 5)
    say(f"builds page: {builds} builds on {branches} branches, {repeat} requests each")
    return figures(collect(builds, branches, repeat, warmup, phases=(10,)))
