"""The version task's own check of a run's params (``build_plan.resolve_build``), rule by rule.

The trigger form's schema refuses most bad params before a run exists, so a whole-run test only ever
reaches the version task with what the schema cannot judge (a channel that does not fit the version). The
task checks everything again, for runs whose params did not pass through the schema; here it is called
directly with params the schema would have refused, one rule each, and must refuse each before any side
effect (no tagging cache, no git), naming the param.
"""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

from flatcar_airflow.build_plan import resolve_build
from flatcar_airflow.config import parse_config
from flatcar_airflow.tagging import BuildKind


@pytest.fixture
def config(tmp_path):
    text = (
        f"scripts_repo: {tmp_path / 'no-such-origin.git'}\n"
        f"tagging_cache: {tmp_path / 'tag-cache'}\n"
        "arches: {amd64: {formats: [qemu_uefi], test_vendors: [qemu_uefi]}}\n"
        "full: {arches: [amd64]}\n"
        "os: {branches: [flatcar-4593], arches: [amd64]}\n"
    )
    return parse_config(text)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"ref": "main\n"}, "ref 'main\\n' must start with a letter or digit"),
        ({"ref": "--upload-pack=touch /tmp/x"}, "ref '--upload-pack"),
        ({"ref": "flatcar-4593/../main"}, "is not a valid git ref name"),
        ({"ref": ""}, "ref is empty"),
        ({"version": "main-1.0.0-$(id)"}, "main-1.0.0-$(id)"),
        ({"version": "4593.2.4"}, "4593.2.4"),
        ({"build_id": "pr;reboot"}, "pr;reboot"),
        ({"version": "stable-4593.2.5", "build_id": "pr-1"}, "either a version or a build id"),
        ({"arches": ["riscv"]}, "arches ['riscv'] are not among"),
        ({"formats": ["qemu_uefi; reboot"]}, "image format 'qemu_uefi; reboot'"),
        ({"formats": ["qemu_uefi\nvmware"]}, "image format"),
        ({"test_vendors": ["aws"]}, "test vendor(s) 'aws' have no task for amd64"),
        ({"seed_sdk": "4593.0.0$(id)"}, "4593.0.0$(id)"),
    ],
)
def test_the_version_task_refuses_what_the_schema_would_have(config, tmp_path, params, message):
    params = {"ref": "flatcar-4593", **params}
    context = {"dag_run": None, "params": params, "logical_date": None}

    with pytest.raises(AirflowFailException) as raised:
        resolve_build(config, BuildKind.OS, "flatcar-4593", context)

    assert str(raised.value).startswith("invalid params: ")
    assert message in str(raised.value)
    assert not (tmp_path / "tag-cache").exists()  # refused before the tagging cache (and git) was touched
