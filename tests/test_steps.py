"""Pure logic of the build steps: arguments, prerequisites, outputs, TAP summaries, job environment."""

from __future__ import annotations

import json
import subprocess

import pytest

from flatcar_airflow.artifacts import ArtifactRef
from flatcar_airflow.runners import validate_runner_config
from flatcar_airflow.runners.base import Job, job_key, render_job_env
from flatcar_airflow.steps import STEPS, BuildContext, expand_formats, tap_summary

FULL = {
    "tag": "main-4799.0.0-nightly-20260821-2100",
    "versionfile": {
        "FLATCAR_VERSION": "4799.0.0+nightly-20260821-2100",
        "FLATCAR_VERSION_ID": "4799.0.0",
        "FLATCAR_BUILD_ID": "nightly-20260821-2100",
        "FLATCAR_SDK_VERSION": "4799.0.0+nightly-20260821-2100",
    },
}
OS_ONLY = {
    "tag": "stable-4593.2.5-nightly-20260821-2100",
    "versionfile": {
        "FLATCAR_VERSION": "4593.2.5+nightly-20260821-2100",
        "FLATCAR_VERSION_ID": "4593.2.5",
        "FLATCAR_BUILD_ID": "nightly-20260821-2100",
        "FLATCAR_SDK_VERSION": "4593.0.0",
    },
}


def paths(refs):
    return [ref.path for ref in refs]


def test_sdk_steps_use_the_sdk_version():
    ctx = BuildContext.from_build(FULL)
    boot = STEPS["sdk_bootstrap"]
    options = {"seed_version": "4798.0.0+nightly-20260820-2100"}
    boot.validate(ctx, options)
    assert boot.args(ctx, options) == [
        "4798.0.0+nightly-20260820-2100",
        "main-4799.0.0-nightly-20260821-2100",
    ]
    assert paths(boot.outputs(ctx, options)) == [
        "sdk/amd64/4799.0.0+nightly-20260821-2100/flatcar-sdk-amd64-4799.0.0+nightly-20260821-2100.tar.bz2"
    ]
    assert paths(STEPS["sdk_container"].outputs(ctx, {})) == [
        f"containers/4799.0.0-nightly-20260821-2100/flatcar-sdk-{f}-4799.0.0-nightly-20260821-2100.tar.zst"
        for f in ("all", "amd64", "arm64")
    ]


def test_bootstrap_refuses_an_os_only_build_and_a_missing_seed():
    with pytest.raises(ValueError, match="not a full build"):
        STEPS["sdk_bootstrap"].validate(BuildContext.from_build(OS_ONLY), {"seed_version": "4593.0.0"})
    with pytest.raises(ValueError, match="needs seed_version"):
        STEPS["sdk_bootstrap"].validate(BuildContext.from_build(FULL), {})


def test_packages_of_a_released_sdk_need_nothing_from_the_cache():
    os_ctx = BuildContext.from_build(OS_ONLY, "arm64")
    assert STEPS["packages"].inputs(os_ctx, {}) == []
    assert paths(STEPS["packages"].outputs(os_ctx, {})) == [
        "containers/4593.2.5-nightly-20260821-2100/flatcar-packages-arm64-4593.2.5-nightly-20260821-2100.tar.zst"
    ]
    full_ctx = BuildContext.from_build(FULL, "amd64")
    assert paths(STEPS["packages"].inputs(full_ctx, {})) == [
        "containers/4799.0.0-nightly-20260821-2100/flatcar-sdk-amd64-4799.0.0-nightly-20260821-2100.tar.zst"
    ]


def test_os_steps_read_the_packages_container_and_write_images():
    ctx = BuildContext.from_build(OS_ONLY, "amd64")
    dv = "4593.2.5-nightly-20260821-2100"
    packages = f"containers/{dv}/flatcar-packages-amd64-{dv}.tar.zst"
    image = "images/amd64/4593.2.5+nightly-20260821-2100/flatcar_production_image.bin.bz2"
    assert paths(STEPS["push_packages"].inputs(ctx, {})) == [packages]
    assert paths(STEPS["push_packages"].outputs(ctx, {})) == [
        "boards/amd64-usr/4593.2.5+nightly-20260821-2100/pkgs/Packages"
    ]
    assert paths(STEPS["image"].outputs(ctx, {})) == [image]
    assert paths(STEPS["vms"].inputs(ctx, {"formats": ["qemu_uefi"]})) == [packages, image]
    assert STEPS["vms"].args(ctx, {"formats": ["qemu_uefi", "vmware"]}) == ["amd64", "qemu_uefi", "vmware"]
    assert STEPS["test"].args(ctx, {"vendor": "qemu_uefi", "tests": ["cl.basic", "cl.update.*"]}) == [
        "amd64",
        "qemu_uefi",
        "cl.basic",
        "cl.update.*",
    ]
    assert paths(STEPS["test"].outputs(ctx, {"vendor": "qemu_uefi"})) == [
        "testing/4593.2.5+nightly-20260821-2100/amd64/qemu_uefi/results-qemu_uefi.tap",
        "testing/4593.2.5+nightly-20260821-2100/amd64/qemu_uefi/results-qemu_uefi-detailed.tap",
    ]
    assert STEPS["image_changes"].args(ctx, {"compare_to": "last-release"}) == ["amd64", "last-release"]


@pytest.mark.parametrize(
    ("step", "options", "message"),
    [
        ("packages", {}, "pass arch"),
        ("vms", {"formats": []}, "at least one image format"),
        ("vms", {"formats": ["qemu;reboot"]}, "shell metacharacter"),
        ("test", {"vendor": "QEMU"}, "lower-case"),
        ("test", {"vendor": "qemu", "tests": ["$(id)"]}, "test pattern"),
        ("image_changes", {"compare_to": "yesterday"}, "last-release"),
    ],
)
def test_bad_options_are_refused(step, options, message):
    ctx = BuildContext.from_build(OS_ONLY, None if step == "packages" else "amd64")
    with pytest.raises(ValueError, match=message):
        STEPS[step].validate(ctx, options)


def test_bad_builds_are_refused():
    with pytest.raises(ValueError, match="tag task's result"):
        BuildContext.from_build({"tag": "main-1.0.0"})
    with pytest.raises(ValueError, match="arch 'riscv'"):
        BuildContext.from_build(OS_ONLY, "riscv")


def test_format_aliases_expand_like_vms_sh():
    assert expand_formats(["vmware", "aws", "qemu", "qemu_uefi", "qemu_uefi_secure", "pxe"]) == [
        "vmware",
        "vmware_ova",
        "vmware_raw",
        "ami",
        "ami_vmdk",
        "qemu_uefi",
        "pxe",
    ]


def test_vendor_image_outputs_come_from_the_listing():
    ctx = BuildContext.from_build(OS_ONLY, "amd64")
    listing = [
        ("flatcar_production_qemu_uefi_image.img.bz2", 100),
        ("flatcar_production_qemu_uefi_image.img.bz2.DIGESTS", 1),
        ("flatcar_production_pxe.vmlinuz", 50),
        ("flatcar_production_pxe_image.cpio.gz", 60),
    ]
    refs = STEPS["vms"].listed_outputs(ctx, {"formats": ["qemu_uefi", "pxe"]}, listing)
    assert [(r.path.rsplit("/", 1)[1], r.size, r.extra["format"]) for r in refs] == [
        ("flatcar_production_qemu_uefi_image.img.bz2", 100, "qemu_uefi"),
        ("flatcar_production_pxe.vmlinuz", 50, "pxe"),
        ("flatcar_production_pxe_image.cpio.gz", 60, "pxe"),
    ]
    with pytest.raises(ValueError, match="no file for format azure"):
        STEPS["vms"].listed_outputs(ctx, {"formats": ["azure"]}, listing)


def test_tap_summary():
    text = (
        "TAP version 13\n1..4\nok 1 - cl.basic\nnot ok 2 - cl.network.ping\n  ---\n  error: x\n  ...\n"
        "ok 3 - cl.update # SKIP not here\nok 4 - cl.flaky\n"
        "   ---\n   Succeeded: qemu_uefi (2)\n   Failed: qemu_uefi (1)\n   ...\n"
    )
    assert tap_summary(text) == {
        "passed": 2,
        "failed": 1,
        "skipped": 1,
        "flaky": 1,
        "failures": ["cl.network.ping"],
        "flaky_tests": ["cl.flaky"],
    }


def test_artifact_records_round_trip_as_plain_data():
    """A record survives XCom (JSON) unchanged: compared with the record it was made from, not itself."""
    ref = STEPS["packages"].outputs(BuildContext.from_build(OS_ONLY, "amd64"), {})[0]
    detailed = ref.with_details(url="https://c/x", size=5, image_id="abc")
    data = json.loads(json.dumps(detailed.to_dict()))
    assert data["image_id"] == "abc" and data["extra"]["image"] == "flatcar-packages-amd64"
    assert ArtifactRef.from_dict(data) == detailed
    assert ArtifactRef.from_dict(data).to_dict() == detailed.to_dict()
    assert ArtifactRef.from_dict(ref.to_dict()) == ref
    with pytest.raises(ValueError):
        ArtifactRef.from_dict({"path": "x"})


def test_job_env_survives_bash_with_hostile_values(tmp_path):
    nasty = "a'b\"c $(touch /tmp/pwned) `id` ; \\ \n end"
    job = Job(
        key="k",
        attempt=1,
        origin="https://h/x.git",
        ref="main-1.0.0",
        script="s.sh",
        function="f",
        args=["amd64", nasty],
        env={"MY_VAR": nasty},
        secret_env={"TOKEN": "s3cr3t"},
        cache={"server": "c", "port": "2222", "user": "u", "path_prefix": "/p x"},
    )
    env_file = tmp_path / "job.env"
    env_file.write_text(render_job_env(job, mirror="/m", workspace="/w"))
    out = subprocess.run(
        [
            "bash",
            "-c",
            'source "$1"; printf "%s\\0" "${FLATCAR_JOB_ARGS[@]}" "$MY_VAR" "$FLATCAR_JOB_CACHE_PATH_PREFIX"'
            ' "$TOKEN"',
            "x",
            str(env_file),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    assert out[:5] == ["amd64", nasty, nasty, "/p x", "s3cr3t"]
    with pytest.raises(ValueError, match="not a valid shell name"):
        render_job_env(
            Job(
                key="k",
                attempt=1,
                origin="o",
                ref="r",
                script="s",
                function="f",
                args=[],
                env={"BAD-NAME": "x"},
            ),
            mirror="/m",
            workspace="/w",
        )


def test_job_key_is_stable_and_safe():
    assert job_key("flatcar_os", "manual__2026-11-25T19:33:01+00:00", "packages_amd64", None) == (
        "flatcar_os__manual__2026-11-25T19_33_01_00_00__packages_amd64"
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"type": "kubernetes"}, "runner.type 'kubernetes'"),
        ({"type": "ssh"}, "needs ssh_conn_id"),
        ({"type": "docker", "image": "x", "volumes": []}, "unknown key"),
        ({"type": "local", "root": "relative"}, "absolute path"),
        ({"type": "local", "root": "/a/../etc"}, "absolute path"),
    ],
)
def test_runner_configuration_errors_name_the_key(config, message):
    with pytest.raises(ValueError, match=message):
        validate_runner_config(config)


def test_sdk_env_names_reach_the_wrapper_and_must_be_in_the_job_environment():
    job = Job(key="k", attempt=1, origin="o", ref="main-1.0.0", script="s.sh", function="f", args=[],
              secret_env={"AWS_CREDENTIALS": "c2VjcmV0", "GCP_JSON_KEY": ""},
              sdk_env=["AWS_CREDENTIALS", "GCP_JSON_KEY"])  # fmt: skip
    assert "FLATCAR_JOB_SDK_ENV=(AWS_CREDENTIALS GCP_JSON_KEY)\n" in render_job_env(
        job, mirror="/m", workspace="/w"
    )
    job.sdk_env.append("NOT_GIVEN")
    with pytest.raises(
        ValueError, match=r"sdk_container/\.env variable 'NOT_GIVEN' is not in the job's environment"
    ):
        render_job_env(job, mirror="/m", workspace="/w")
