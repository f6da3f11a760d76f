"""Preflight: the build host's checks, through the runners, the pipelines and ``flatcar-airflow doctor``.

Real things only: this machine as the local build host, the session's sshd build host through the ssh
runner, the real build cache service (ssh and HTTPS), a real git origin and ``dag.test()``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from connections import HOST_CONN
from test_pipelines import config_text

from flatcar_airflow.config import parse_config
from flatcar_airflow.pipelines import build_dags

EXE = Path(sys.executable).with_name("flatcar-airflow")
BROKEN = {
    "min_free_gb": 100000,
    "tools": ["bash", "git", "flatcar-no-such-tool"],
    "urls": ["https://registry.flatcar.invalid/v2/"],
    "network": "error",
}


def test_doctor_names_every_problem_of_every_host_at_once(connections, build_cache, tmp_path):
    config = tmp_path / "flatcar.yaml"
    data = yaml.safe_load(config_text("https://example.org/scripts.git", tmp_path))
    data["preflight"] = BROKEN
    # arm64's steps run on the ssh build host: the doctor checks both hosts.
    data["arches"]["arm64"]["runner"] = {"type": "ssh", "ssh_conn_id": HOST_CONN, "root": str(tmp_path / "r")}
    config.write_text(yaml.safe_dump(data))
    done = subprocess.run(
        [str(EXE), "doctor", "--config", str(config)],
        capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "AIRFLOW__CORE__UNIT_TEST_MODE"},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    hosts = json.loads(done.stdout)["hosts"]
    assert [(host["for"], host["ok"]) for host in hosts] == [
        ("default runner", False),
        ("arm64 steps", False),
    ]
    assert hosts[1]["target"].startswith(f"ssh ({HOST_CONN}")
    for host in hosts:
        levels = {check["name"]: check["level"] for check in host["checks"]}
        # Every problem at once: the tool, the disk and the registry; the real cache answers both ways.
        assert levels["tools"] == levels["disk"] == levels["network"] == "error", host
        assert levels["cache-ssh"] == levels["cache-https"] == "ok", host
        assert "flatcar-no-such-tool" in host["message"] and "100000 GiB" in host["message"]
        assert "registry.flatcar.invalid" in host["message"]
    assert "=> preflight on local" in done.stderr and "problems:" in done.stderr


def test_a_host_that_cannot_build_fails_the_run_before_the_tag(run_dag, mini_origin, connections, tmp_path):
    config = parse_config(config_text(str(mini_origin.path), tmp_path, preflight=BROKEN))
    dag = build_dags(config)["flatcar_os_flatcar_4593"]
    tags = mini_origin.tags()
    run = run_dag(dag, logical_date=None, run_conf={"arches": ["amd64"]})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["preflight"] == "failed" and states["version"] == "success"
    assert states["tag"] == "upstream_failed" and states["amd64.packages"] == "upstream_failed"
    assert mini_origin.tags() == tags  # no version tag for a build that could not run
    failure = run.get_task_instance("preflight").xcom_pull(task_ids="preflight", key="failure")
    assert failure["kind"] == "preflight"
    assert failure["summary"].startswith("preflight on local (")
    assert (
        "4 problems" in failure["summary"]
    )  # the tool, two disks, the registry and "flatcar-no-such-tool" in failure["summary"]
    manifest = run.get_task_instance("summary").xcom_pull(task_ids="summary")
    assert manifest["steps"]["preflight"]["failure"]["summary"] == failure["summary"]


def test_each_arch_on_its_own_host_gets_its_own_check(tmp_path):
    overrides = {"arches": {"amd64": {}, "arm64": {"queue": "arm64"}}}
    dag = build_dags(parse_config(config_text("x", tmp_path, **overrides)))["flatcar_os_flatcar_4593"]
    assert "amd64.preflight" not in dag.task_dict  # same runner and queue as the default: one check
    check = dag.task_dict["arm64.preflight"]
    assert check.queue == "arm64" and check.downstream_task_ids == {"tag"}
    assert dag.task_dict["preflight"].downstream_task_ids == {"tag"}
    # After the version task: a run whose params are refused touches no build host.
    assert dag.task_dict["preflight"].upstream_task_ids == check.upstream_task_ids == {"version"}
    assert dag.task_dict["tag"].trigger_rule == "none_failed"
    off = build_dags(parse_config(config_text("x", tmp_path, preflight={"enabled": False})))
    assert "preflight" not in off["flatcar_os_flatcar_4593"].task_dict
