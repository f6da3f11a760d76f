"""Every benchmark still runs (issue: benchmarks): ``python -m benchmarks --smoke`` with tiny sizes.

No timed assertions: the machine is shared and noisy. The smoke run writes its table into a copy of
docs/benchmarks.md; the test checks that every benchmark gave its rows with numbers, that the
hand-written part of the page is kept, and that a second run replaces the generated part.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
#: benchmark -> how its figures' names start
EXPECTED = {
    "parse": "parse dags/flatcar.py",
    "buildcache": "build cache:",
    "tagging": "tagging,",
    "builds_page": "builds",
    "orchestration": "",
    "noop_nightly": "no-op nightly",
    "scale": "scale:",
    "worktrees": "warm",
    "log_streaming": "",
    "memory": "PSS of the quickstart",
}


def test_every_benchmark_runs_in_smoke_mode_and_rewrites_the_table(tmp_path, docker_engine):
    doc, results = tmp_path / "benchmarks.md", tmp_path / "results.json"
    original = DOC.read_text()
    doc.write_text(original)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["FLATCAR_BENCH_DOCKER_LOCK_HELD"] = "1"  # this session holds the docker lock (docker_engine)
    cmd = [sys.executable, "-m", "benchmarks", "--smoke", "--doc", str(doc), "--results", str(results)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]

    stored = json.loads(results.read_text())
    assert sorted(stored) == sorted(EXPECTED)
    for name, prefix in EXPECTED.items():
        figures = stored[name]["figures"]
        assert figures, f"{name} gave no figures"
        for figure in figures:
            assert figure["name"].startswith(prefix), (name, figure["name"])
            assert isinstance(figure["value"], (int, float)) and math.isfinite(figure["value"]), figure
            assert figure["value"] >= 0, figure
            if figure["baseline_value"] is not None:
                assert math.isfinite(figure["baseline_value"]), figure
        assert stored[name]["machine"]["cores"] >= 1
    # The orchestration smoke measured the full build, the shell script and Airflow's floor (the
    # same-shaped DAG of trivial tasks) under the LocalExecutor, and the no-op nightly after them.
    orchestration = [f["name"] for f in stored["orchestration"]["figures"]]
    for start in ("orchestration overhead per step task", "full build amd64", "Airflow's own cost per task"):
        assert any(name.startswith(start) and "Celery" not in name for name in orchestration), orchestration
    floor = next(f for f in stored["orchestration"]["figures"] if f["name"].startswith("Airflow's own"))
    assert floor["extra"]["tasks"] and floor["extra"]["executor"] == "LocalExecutor", floor

    text = doc.read_text()
    hand_written = original.split("<!-- end:", 1)[-1].split("\n", 1)[-1]
    assert hand_written.strip() and hand_written.strip() in text  # the notes after the table are kept
    table = [line for line in text.splitlines() if line.startswith("| ") and "(smoke)" in line]
    assert len(table) == sum(
        len([f for f in stored[n]["figures"] if f["benchmark"] != "scale"]) for n in stored
    )
    for row in table:
        value = row.split("|")[2].strip()
        assert re.fullmatch(r"[\d,.]+ ?\S*", value), row
    assert "Airflow 3." in text and "cores" in text
    assert "### Scale" in text

    # A second run of one benchmark replaces its rows and keeps the others'.
    before = text.count("(smoke)")
    proc = subprocess.run([*cmd, "tagging"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert doc.read_text().count("(smoke)") == before
    assert doc.read_text().count("<!-- begin:") == 1
