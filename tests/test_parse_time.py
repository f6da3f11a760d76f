"""The DAG file imports nothing heavy when it is parsed (issue: parse like an empty DAG file).

The dag-processor re-parses dags/flatcar.py every few seconds. GitPython, the docker SDK, paramiko, the
TAP parser, the SMTP and web stacks are needed only in the tasks that use them; importing them at parse
time cost ~0.4 s a parse. A fresh interpreter imports Airflow's SDK (what any DAG file costs), then the
DAG file, and looks at what the DAG file added to ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DAG_FILE = Path(__file__).resolve().parents[1] / "dags" / "flatcar.py"
HEAVY = (
    "git",
    "docker",
    "paramiko",
    "tap",
    "filelock",
    "requests",
    "smtplib",
    "aiosmtpd",
    "jinja2",
    "fastapi",
    "psycopg2",
)

PROBE = """
import importlib.util, json, sys
import airflow.sdk
before = set(sys.modules)
spec = importlib.util.spec_from_file_location("flatcar_dags", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_parsing_the_dag_file_imports_nothing_heavy(tmp_path):
    config = tmp_path / "flatcar.yaml"
    config.write_text(
        "scripts_repo: https://github.com/flatcar/scripts.git\n"
        "os: {branches: [flatcar-4593, flatcar-4459, flatcar-4230]}\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "FLATCAR_AIRFLOW_CONFIG": str(config),
           "AIRFLOW_HOME": str(tmp_path / "airflow")}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(DAG_FILE)], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    added = json.loads(out.stdout.strip().splitlines()[-1])
    assert "flatcar_airflow.pipelines" in added  # the probe did parse the DAG file
    heavy = sorted(name for name in added if name.split(".")[0] in HEAVY)
    assert heavy == [], f"parsing {DAG_FILE.name} imports {heavy}"


def test_a_tasks_parse_builds_only_its_dag(tmp_path):
    """A task's process parses the DAG file with Airflow's parsing context set to its DAG: only that DAG
    is built (with 10 release branches a task would otherwise build 11 DAGs to run one task)."""
    config = tmp_path / "flatcar.yaml"
    config.write_text(
        "scripts_repo: https://github.com/flatcar/scripts.git\n"
        "os: {branches: [flatcar-4593, flatcar-4459, flatcar-4230]}\n"
    )
    probe = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('flatcar_dags', sys.argv[1])\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "from airflow.sdk import DAG\n"
        "print(sorted(k for k, v in vars(module).items() if isinstance(v, DAG)))\n"
    )
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "FLATCAR_AIRFLOW_CONFIG": str(config),
            "AIRFLOW_HOME": str(tmp_path / "airflow")}  # fmt: skip
    found = {}
    for dag_id in (None, "flatcar_os_flatcar_4459", "flatcar_buildcache_gc"):
        env = {**base, **({"_AIRFLOW_PARSING_CONTEXT_DAG_ID": dag_id} if dag_id else {})}
        out = subprocess.run(
            [sys.executable, "-c", probe, str(DAG_FILE)], env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr[-3000:]
        found[dag_id] = out.stdout.strip().splitlines()[-1]
    builds = ["flatcar_full", "flatcar_os_flatcar_4230", "flatcar_os_flatcar_4459", "flatcar_os_flatcar_4593"]
    assert found[None] == str(sorted(["flatcar_buildcache_gc", *builds, "flatcar_release"]))
    assert found["flatcar_os_flatcar_4459"] == str(["flatcar_os_flatcar_4459"])
    assert found["flatcar_buildcache_gc"] == str(["flatcar_buildcache_gc"])
