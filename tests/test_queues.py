"""Per-arch Celery queues and runners: the configuration keys and what every task of both DAG shapes gets.

The real thing (CeleryExecutor, Redis, PostgreSQL, a worker per queue) is tests/test_celery.py.
"""

from __future__ import annotations

import re

import pytest
import yaml

from flatcar_airflow.config import ConfigError, parse_config
from flatcar_airflow.operators import FlatcarStepOperator, PreflightOperator
from flatcar_airflow.pipelines import FULL_DAG_ID, build_dags

DOCKER = {"type": "docker", "image": "flatcar-airflow-runner:0.1.0"}
ARM_HOST = {"type": "ssh", "ssh_conn_id": "arm64_build_host", "root": "/srv/flatcar"}
#: The tasks that are not steps of one arch: they stay on the default queue, steps with the default runner.
NOT_PER_ARCH = {
    "branch_lock", "version", "tag", "summary", "preflight", "sdk_bootstrap", "sdk_container", "packages_tag"
}  # fmt: skip


def _config(**overrides):
    data = {
        "scripts_repo": "https://example.org/scripts.git",
        "runner": DOCKER,
        "arches": {
            "amd64": {"test_vendors": ["qemu_uefi", "pxe"], "queue": "amd64"},
            "arm64": {"test_vendors": ["qemu_uefi"], "queue": "arm64", "runner": ARM_HOST},
        },
        "os": {"branches": ["flatcar-4593"]},
        **overrides,
    }
    return parse_config(yaml.safe_dump(data))


def _placement(dag) -> dict[str, tuple[str, dict | None]]:
    """task id → (queue, runner configuration or None for a task that is no step)."""
    return {
        task.task_id: (
            task.queue,
            task.runner_config if isinstance(task, (FlatcarStepOperator, PreflightOperator)) else None,
        )
        for task in dag.tasks
    }


@pytest.mark.parametrize("dag_id", [FULL_DAG_ID, "flatcar_os_flatcar_4593"])
def test_every_task_goes_to_its_arch_queue_and_runner(dag_id):
    from airflow.serialization.serialized_objects import DagSerialization

    dag = build_dags(_config(queue="builds"))[dag_id]
    placement = _placement(dag)
    docker = {**DOCKER, "root": "/var/lib/flatcar-airflow"}
    arm_host = ARM_HOST
    per_arch = {task_id for task_id in placement if task_id not in NOT_PER_ARCH}
    assert {task_id.partition(".")[0] for task_id in per_arch} == {"amd64", "arm64"}
    for task_id, (queue, runner) in placement.items():
        arch = task_id.partition(".")[0]
        if task_id in NOT_PER_ARCH:
            expected = ("builds", None if task_id in ("branch_lock", "version", "tag", "summary") else docker)
        elif arch == "amd64":
            expected = ("amd64", docker)
        else:
            expected = ("arm64", arm_host)
        assert (queue, runner) == expected, task_id
    # Each arch's build host (its own queue) gets its own preflight check (docs/runners.md#preflight).
    steps = {"preflight", "packages", "push_packages", "image", "vms", "image_changes"}
    assert {t.partition(".")[2] for t in per_arch} == steps | {"test_qemu_uefi", "test_pxe"}
    assert "arm64.test_pxe" not in placement
    first = "sdk_bootstrap" if dag_id == FULL_DAG_ID else "packages_tag"
    assert placement[first][1] == docker

    # What the scheduler sees is the serialized DAG: the queues survive it.
    serialized = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    assert {task.task_id: task.queue for task in serialized.tasks} == {
        task_id: queue for task_id, (queue, _) in placement.items()
    }


def test_without_per_arch_keys_everything_uses_the_defaults():
    config = _config(arches={"amd64": {}, "arm64": {}})
    assert config.queue == "default"
    for dag in build_dags(config).values():
        for task_id, (queue, runner) in _placement(dag).items():
            assert queue == "default", task_id
            assert runner in (None, {**DOCKER, "root": "/var/lib/flatcar-airflow"}), task_id


def test_one_arch_configured_the_other_falls_back():
    config = _config(arches={"amd64": {}, "arm64": {"runner": ARM_HOST}})
    placement = _placement(build_dags(config)[FULL_DAG_ID])
    assert placement["arm64.image"] == ("default", ARM_HOST)
    assert placement["amd64.image"] == ("default", {**DOCKER, "root": "/var/lib/flatcar-airflow"})
    config = _config(arches={"amd64": {"queue": "x86"}, "arm64": {}})
    placement = _placement(build_dags(config)[FULL_DAG_ID])
    assert placement["amd64.vms"][0] == "x86" and placement["arm64.vms"][0] == "default"
    assert placement["summary"][0] == "default"


def test_a_runner_given_by_name_only():
    config = _config(runner="local", arches={"amd64": {"runner": "local"}, "arm64": {"runner": ARM_HOST}})
    assert config.runner == {"type": "local", "root": "/var/lib/flatcar-airflow"}
    assert config.arch_runner("amd64") == {"type": "local", "root": "/var/lib/flatcar-airflow"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"queue": "build hosts"}, "queue: queue 'build hosts' must be letters, digits, '_', '.' and '-'"),
        ({"queue": ""}, "queue: queue '' must be"),
        ({"arches": {"arm64": {"queue": "arm,64"}}}, "arches.arm64.queue: queue 'arm,64' must be"),
        (
            {"arches": {"arm64": {"runner": {"type": "ssh"}}}},
            "arches.arm64.runner: runner: a ssh runner needs ssh_conn_id",
        ),
        (
            {"arches": {"amd64": {"runner": {"type": "docker", "image": "x", "host": "y"}}}},
            "arches.amd64.runner: runner: unknown key(s) for a docker runner: host",
        ),
        (
            {"arches": {"amd64": {"runner": {"type": "local", "root": "relative"}}}},
            "arches.amd64.runner: runner.root 'relative' must be an absolute path",
        ),
        ({"arches": {"arm64": {"runner": {"type": "kubernetes"}}}}, "arches.arm64.runner: runner.type"),
        ({"arches": {"arm64": {"runner": ["ssh"]}}}, "arches.arm64.runner: runner must be a mapping"),
        ({"runner": {"type": "ssh"}}, "runner: runner: a ssh runner needs ssh_conn_id"),
    ],
)
def test_bad_queues_and_runners_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _config(**overrides)


def test_the_shipped_default_configuration_keeps_one_queue():
    from flatcar_airflow.config import DEFAULT_CONFIG

    config = parse_config(DEFAULT_CONFIG.read_text())
    assert config.queue == "default"
    assert {config.arch_queue(arch) for arch in config.arches} == {"default"}
    assert {config.arch_runner(arch)["type"] for arch in config.arches} == {"docker"}
