"""The tagging benchmark (benchmarks/tagging.py) as the harness's figures."""

from __future__ import annotations

from .common import Figure, say
from .tagging import benchmark, synthetic_origin


def run(smoke: bool = False) -> list[Figure]:
    if smoke:
        size = {"commits": 200, "tags": 10, "files": 20}
        repeat, clone_repeat = 1, 1
    else:
        size = {"commits": 36000, "tags": 450, "files": 3000}
        repeat, clone_repeat = 5, 3
    origin = synthetic_origin(seed=4799, say=say, **size)
    scenarios = {s.name: s.summary() for s in benchmark(origin, repeat, clone_repeat, say)}
    shallow, full = scenarios["clone --bare --depth=1"], scenarios["clone --bare (full)"]
    shape = f"{size['commits']:,} commits, {size['tags']} tags, {size['files']:,} files"
    out = []
    for name, baseline, goal in (
        ("cold", full, None),
        ("warm", shallow, 1.0),
        ("warm, main moved", shallow, 1.0),
        ("reuse", shallow, 1.0),
    ):
        s = scenarios[name]
        ratio = s["median_s"] / baseline["median_s"]
        out.append(
            Figure(
                benchmark="tagging",
                name=f"tagging, {name} ({shape})",
                value=s["median_s"],
                minimum=s["min_s"],
                unit="s",
                runs=s["runs"],
                baseline=f"git {baseline['name']}",
                baseline_value=baseline["median_s"],
                ratio=round(ratio, 2),
                goal="faster than a shallow clone" if goal else "",
                met=ratio < goal if goal else None,
            )
        )
    return out
