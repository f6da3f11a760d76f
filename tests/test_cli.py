"""The ``flatcar-airflow`` console command, run as a user runs it (the installed entry point)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from gitrepos import VERSIONFILE, git

EXE = shutil.which("flatcar-airflow", path=str(Path(sys.executable).parent)) or "flatcar-airflow"


def cli(*args: str) -> tuple[int, dict, str]:
    proc = subprocess.run([EXE, *args], capture_output=True, text=True, env=os.environ, timeout=120)
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def test_help_documents_the_commands():
    proc = subprocess.run([EXE, "--help"], capture_output=True, text=True, check=True)
    for command in ("version", "nightly", "tag"):
        assert command in proc.stdout
    tag_help = subprocess.run([EXE, "tag", "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--repo", "--ref", "--kind", "--nightly", "--as-of", "--force", "--outputs-exist"):
        assert option in tag_help


def test_version_prints_all_forms():
    status, out, _ = cli("version", "stable-4593.2.5-nightly-20260821-2100")
    assert status == 0 and out["ok"]
    assert out["version"]["versionfile_version"] == "4593.2.5+nightly-20260821-2100"
    assert out["version"]["docker_version"] == "4593.2.5-nightly-20260821-2100"
    assert out["version"]["channel"] == "stable" and out["version"]["nightly"]


def test_invalid_version_exits_2_naming_the_rule():
    status, out, err = cli("version", "stable-4593.0.5")
    assert status == 2 and not out["ok"]
    assert "does not agree with minor number 0" in out["message"]
    assert "does not agree" in err


def test_nightly_versions():
    assert cli("nightly", "--at", "2026-08-21T21:00Z", "--main")[1]["version"]["tag"] == (
        "main-4799.0.0-nightly-20260821-2100"
    )
    out = cli("nightly", "--at", "2026-08-21T23:00+02:00", "--version-id", "4593.2.5")[1]
    assert out["version"]["tag"] == "stable-4593.2.5-nightly-20260821-2100"


def test_nightly_refuses_a_time_without_zone():
    proc = subprocess.run(
        [EXE, "nightly", "--at", "2026-08-21T21:00", "--main"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "has no time zone" in proc.stderr


def test_tag_a_nightly_and_rerun_it(origins, tmp_path):
    args = (
        "tag",
        "--repo",
        origins.url,
        "--ref",
        "flatcar-4593",
        "--kind",
        "os",
        "--nightly",
        "--at",
        "2026-08-21T21:00Z",
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    status, out, _ = cli(*args)
    assert status == 0, out
    assert out["result"]["action"] == "created" and out["result"]["branch_pushed"]
    tag = "stable-4593.2.4-nightly-20260821-2100"
    assert out["version"]["tag"] == tag
    assert origins.head("flatcar-4593") == origins.tag_commit(tag) == out["result"]["commit"]
    assert "FLATCAR_SDK_VERSION=4593.0.0" in origins.show(tag, VERSIONFILE)

    status, out, _ = cli(*args)
    assert status == 0 and out["result"]["action"] == "reused"

    status, out, _ = cli(
        *args[:7],
        "--nightly",
        "--at",
        "2026-08-22T21:00Z",
        "--outputs-exist",
        "yes",
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert status == 0 and out["result"]["action"] == "skipped", out


def test_tag_backfill_as_of_never_pushes_the_branch(origins, tmp_path):
    head = origins.head("main")
    status, out, _ = cli(
        "tag",
        "--repo",
        origins.url,
        "--ref",
        "main",
        "--kind",
        "full",
        "--nightly",
        "--at",
        "2026-08-21T21:00Z",
        "--as-of",
        "2026-08-21T21:00Z",
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert status == 0, out
    assert out["result"]["action"] == "created" and not out["result"]["branch_pushed"]
    assert origins.head("main") == head
    assert git("rev-parse", "main-4799.0.0-nightly-20260821-2100^", cwd=origins.scripts) == head


def test_tag_conflict_exits_1_and_keeps_the_tag(origins, tmp_path):
    git("tag", "main-4799.0.1-x", origins.head("flatcar-4593"), cwd=origins.scripts)
    origins.push_change("main", "README", "differs\n")
    status, out, _ = cli(
        "tag",
        "--repo",
        origins.url,
        "--ref",
        "main",
        "--kind",
        "full",
        "--version",
        "main-4799.0.1-x",
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert status == 1 and out["error"] == "TagConflictError"
    assert origins.tag_commit("main-4799.0.1-x") == origins.head("flatcar-4593")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--nightly",), "--nightly needs --at"),
        (("--version", "main-4799.0.0-$(id)"), "shell metacharacter"),
        (("--version", "main-4799.0.0", "--ref", "--upload-pack=x"), None),
    ],
)
def test_tag_bad_input_exits_2_before_touching_the_origin(origins, tmp_path, args, message):
    tags = origins.tags()
    base = [
        "tag",
        "--repo",
        origins.url,
        "--ref",
        "main",
        "--kind",
        "full",
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    proc = subprocess.run([EXE, *base, *args], capture_output=True, text=True)
    assert proc.returncode == 2
    if message:
        assert message in proc.stdout
    assert origins.tags() == tags


def test_pools_creates_the_configured_pools(airflow_db, tmp_path):
    config = tmp_path / "flatcar.yaml"
    config.write_text(
        "scripts_repo: x\npools:\n  steps: {name: fa_steps_test, slots: 3}\n"
        "  tagging: {name: fa_tagging_test, slots: 1}\n"
    )
    status, out, _ = cli("pools", "--config", str(config))
    assert status == 0 and out["pools"] == [
        {"name": "fa_steps_test", "slots": 3},
        {"name": "fa_tagging_test", "slots": 1},
    ]
    airflow = str(Path(EXE).parent / "airflow")
    listed = subprocess.run(
        [airflow, "pools", "list", "-o", "json"], capture_output=True, text=True, check=True
    )
    table = next(line for line in reversed(listed.stdout.splitlines()) if line.startswith("["))
    pools = {pool["pool"]: int(pool["slots"]) for pool in json.loads(table)}
    assert pools["fa_steps_test"] == 3 and pools["fa_tagging_test"] == 1


def test_pools_refuses_a_bad_configuration(tmp_path):
    config = tmp_path / "flatcar.yaml"
    config.write_text("scripts_repo: x\npools:\n  steps: {name: 'bad name', slots: 0}\n")
    status, out, _ = cli("pools", "--config", str(config))
    assert status == 2 and "pools.steps" in out["message"]
