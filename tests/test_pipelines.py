"""The full and OS-only pipelines: DAG files, graph shapes, params, and whole runs under ``dag.test()``
with the miniature scripts repository, a real dockerd and the ssh/https build cache."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
import yaml
from connections import CACHE_CONN

from flatcar_airflow.config import parse_config
from flatcar_airflow.pipelines import FULL_DAG_ID, build_dags, os_dag_id

ROOT = Path(__file__).resolve().parent.parent
NIGHT = dt.datetime(2026, 8, 21, 21, 0, tzinfo=dt.UTC)
MANIFEST = "flatcar-airflow-manifest.json"


def config_text(origin: str, tmp_path: Path, **overrides) -> str:
    data = {
        "scripts_repo": origin,
        "buildcache_conn_id": CACHE_CONN,
        "runner": {"type": "local", "root": str(tmp_path / "build-root")},
        "tagging_cache": str(tmp_path / "tag-cache"),
        "arches": {
            "amd64": {"formats": ["qemu_uefi"], "test_vendors": ["qemu_uefi"]},
            "arm64": {"formats": ["qemu_uefi"], "test_vendors": ["qemu_uefi"]},
        },
        "full": {"arches": ["amd64", "arm64"]},
        "os": {"branches": ["flatcar-4593"], "arches": ["amd64", "arm64"]},
        "heartbeat_interval": 30,
        "retries": 0,
        "preflight": {"min_free_gb": 1, "network": "off"},
        **overrides,
    }
    return yaml.safe_dump(data)


def test_dag_files_load_without_import_errors(tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    config = tmp_path / "flatcar.yaml"
    config.write_text(config_text("https://example.org/scripts.git", tmp_path))
    monkeypatch.setenv("FLATCAR_AIRFLOW_CONFIG", str(config))
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {FULL_DAG_ID, "flatcar_os_flatcar_4593", "flatcar_buildcache_gc"}


def test_the_shipped_default_configuration_loads(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.delenv("FLATCAR_AIRFLOW_CONFIG", raising=False)
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    assert FULL_DAG_ID in bag.dag_ids


def test_a_bad_configuration_is_one_import_error_naming_the_key(tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    config = tmp_path / "flatcar.yaml"
    config.write_text(config_text("x", tmp_path, full={"schedule": "every night"}))
    monkeypatch.setenv("FLATCAR_AIRFLOW_CONFIG", str(config))
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert len(bag.import_errors) == 1
    assert "full.schedule: 'every night' is not a five-field cron expression" in next(
        iter(bag.import_errors.values())
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"os": {"branches": ["flatcar-4593", "main"]}}, "os.branches lists 'main', which flatcar_full"),
        ({"branch_lock": {"poke_interval": 0}}, "branch_lock.poke_interval: Input should be greater than 0"),
        ({"branch_lock": {"mode": "reschedule"}}, "branch_lock.mode: Extra inputs are not permitted"),
        ({"os": {"arches": ["s390x"]}}, "os.arches.0: Input should be 'amd64' or 'arm64'"),
    ],
)
def test_configuration_errors_name_the_key(tmp_path, overrides, message):
    from flatcar_airflow.config import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(config_text("x", tmp_path, **overrides))


def test_an_os_build_of_main_is_fine_without_the_full_build(tmp_path):
    config = parse_config(config_text("x", tmp_path, full={"enabled": False}, os={"branches": ["main"]}))
    assert set(build_dags(config)) == {"flatcar_os_main"}


def _edges(dag) -> set[tuple[str, str]]:
    return {(task.task_id, down) for task in dag.tasks for down in task.downstream_task_ids}


def test_full_build_graph(tmp_path):
    dag = build_dags(parse_config(config_text("x", tmp_path)))[FULL_DAG_ID]
    edges = _edges(dag)
    assert {
        ("branch_lock", "version"),
        ("version", "tag"),
        ("tag", "sdk_bootstrap"),
        ("sdk_bootstrap", "sdk_container"),
    } <= edges
    assert dag.roots == [dag.task_dict["branch_lock"]]
    assert dag.task_dict["branch_lock"].max_active_tis_per_dag == 1
    for arch in ("amd64", "arm64"):
        assert {
            ("sdk_container", f"{arch}.packages"),
            (f"{arch}.packages", f"{arch}.push_packages"),
            (f"{arch}.packages", f"{arch}.image"),
            (f"{arch}.image", f"{arch}.vms"),
            (f"{arch}.vms", f"{arch}.test_qemu_uefi"),
            (f"{arch}.image", f"{arch}.image_changes"),
            (f"{arch}.test_qemu_uefi", "summary"),
        } <= edges
    assert dag.task_dict["summary"].trigger_rule == "all_done"
    assert dag.max_active_runs == 1 and not dag.catchup
    assert dag.timetable.expression == "0 21 * * *"
    assert dag.task_dict["tag"].pool == "flatcar_tagging"
    assert dag.task_dict["amd64.packages"].pool == "flatcar_build_steps"


def test_os_build_graph_and_dag_ids(tmp_path):
    dags = build_dags(parse_config(config_text("x", tmp_path, os={"branches": ["flatcar-4593", "lts/3033"]})))
    assert os_dag_id("lts/3033") == "flatcar_os_lts_3033" and "flatcar_os_lts_3033" in dags
    dag = dags["flatcar_os_flatcar_4593"]
    edges = _edges(dag)
    assert {
        ("branch_lock", "version"),
        ("version", "tag"),
        ("tag", "packages_tag"),
        ("packages_tag", "amd64.packages"),
        ("packages_tag", "arm64.packages"),
    } <= edges
    assert "sdk_bootstrap" not in dag.task_dict
    assert "seed_sdk" not in dag.params
    assert dag.params["ref"] == "flatcar-4593"


@pytest.fixture
def pipelines(mini_origin, tmp_path, connections):
    return build_dags(parse_config(config_text(str(mini_origin.path), tmp_path)))


@pytest.fixture(autouse=True)
def _empty_cache(request):
    if "build_cache" in request.fixturenames or "pipelines" in request.fixturenames:
        cache = request.getfixturevalue("build_cache")
        cache.clear()
        yield
        cache.clear()
    else:
        yield


def _states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_full_pipeline_run(run_dag, pipelines, mini_origin, build_cache, seed_sdk, tmp_path):
    run = run_dag(pipelines[FULL_DAG_ID], logical_date=NIGHT, run_conf={"arches": ["amd64"]})

    states = _states(run)
    assert states["summary"] == "success", states
    assert {states[t] for t in states if t.startswith("arm64.")} == {"skipped"}
    tag = "main-4799.0.0-nightly-20260821-2100"
    assert mini_origin.tag_commit(tag) == mini_origin.head("main")
    ver = "4799.0.0+nightly-20260821-2100"
    manifest = json.loads(
        (build_cache.root / f"images/amd64/{ver}/flatcar-airflow-manifest.json").read_text()
    )
    assert manifest["version"] == tag and manifest["state"] == "success"
    assert manifest["commit"] == mini_origin.head("main") and manifest["ref"] == "main"
    assert manifest["versionfile"]["FLATCAR_SDK_VERSION"] == ver
    assert manifest["steps"]["sdk_bootstrap"]["state"] == "success"
    assert manifest["arches"]["amd64"]["image"]["artifacts"]
    assert manifest["arches"]["arm64"]["packages"]["state"] == "skipped"
    assert manifest["tests"]["amd64"]["qemu_uefi"]["failed"] == 0
    assert manifest["run_id"] == run.run_id
    returned = run.get_task_instance("summary").xcom_pull(task_ids="summary")
    assert returned["version"] == tag


def test_os_pipeline_run_and_nightly_shortcut(run_dag, pipelines, mini_origin, build_cache, released_sdk):
    dag = pipelines["flatcar_os_flatcar_4593"]
    run = run_dag(dag, logical_date=NIGHT)
    states = _states(run)
    assert states["summary"] == "success", states
    tag = "stable-4593.2.4-nightly-20260821-2100"
    assert mini_origin.tag_commit(tag) == mini_origin.head("flatcar-4593")
    manifest = json.loads(
        (
            build_cache.root / "images/arm64/4593.2.4+nightly-20260821-2100/flatcar-airflow-manifest.json"
        ).read_text()
    )
    assert manifest["versionfile"]["FLATCAR_SDK_VERSION"] == "4593.0.0"

    # The next night: nothing changed and both images exist: the nightly shortcut skips the build.
    again = run_dag(dag, logical_date=NIGHT + dt.timedelta(days=1))
    states = _states(again)
    assert states["tag"] == "skipped" and states["packages_tag"] == "skipped", states
    assert "stable-4593.2.4-nightly-20260822-2100" not in mini_origin.tags()


def test_bad_params_are_refused_before_any_task(run_dag, pipelines, mini_origin):
    from airflow.sdk.exceptions import ParamValidationError

    tags = mini_origin.tags()
    for conf in (
        {"ref": "--upload-pack=touch /tmp/x"},
        {"arches": ["riscv"]},
        {"version": "main-1.0.0-$(id)"},
        {"ref": "main\n"},  # a plain "$" in a pattern would let the final newline through
        {"build_id": "pr-1\n"},
    ):
        with pytest.raises(ParamValidationError):
            run_dag(pipelines[FULL_DAG_ID], logical_date=NIGHT, run_conf=conf)
    assert mini_origin.tags() == tags


def test_params_the_schema_cannot_judge_are_refused_in_the_version_task(run_dag, pipelines, mini_origin):
    run = run_dag(
        pipelines["flatcar_os_flatcar_4593"], logical_date=NIGHT, run_conf={"version": "stable-4593.0.5"}
    )
    assert run.get_task_instance("version").state == "failed"
    assert run.get_task_instance("tag").state == "upstream_failed"
    assert "stable-4593.0.5" not in mini_origin.tags()
    assert run.state == "failed"
    summary = run.get_task_instance("summary")
    assert summary.state == "failed"
    assert summary.xcom_pull(task_ids="summary")["state"] == "failed"


def test_manual_run_with_a_build_id(run_dag, pipelines, mini_origin, build_cache, released_sdk):
    run = run_dag(
        pipelines["flatcar_os_flatcar_4593"],
        logical_date=None,
        run_conf={"build_id": "pr-1234", "arches": ["amd64"], "test_vendors": []},
    )
    assert run.get_task_instance("tag").state == "success"
    plan = run.get_task_instance("version").xcom_pull(task_ids="version")
    assert plan["version"] == "stable-4593.2.4-pr-1234" and plan["run_type"] == "manual"
    head = mini_origin.head("flatcar-4593")
    assert mini_origin.tag_commit("stable-4593.2.4-pr-1234") != head  # free-standing: the branch stays
