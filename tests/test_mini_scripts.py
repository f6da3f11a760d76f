"""The miniature scripts repository (examples/mini-scripts), run directly with bash, no Airflow.

Every step runs as CI runs it (``source ci-automation/<script>; <function> <args>`` in a fresh clone at
the tag, stdin closed, ./ci-cleanup.sh afterwards) against the real local infrastructure of tests/infra.py:
dockerd, the sshd/rsync + HTTPS build cache and bare git origins. The artifacts must land at the build
cache paths of the real scripts and be readable over HTTPS.
"""

from __future__ import annotations

import bz2
import io
import os
import shutil
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from infra import (
    RELEASED_SDK_VERSION,
    BuildCache,
    MiniOrigin,
    StepResult,
    docker_containers,
    image_id,
    make_mini_origin,
    run_step,
)

MAIN_NIGHTLY = "main-4799.0.0-nightly-20260821-2100"
MAIN_VER = "4799.0.0+nightly-20260821-2100"
MAIN_DV = "4799.0.0-nightly-20260821-2100"
BRANCH_NIGHTLY = "stable-4593.2.4-nightly-20260821-2100"
BRANCH_VER = "4593.2.4+nightly-20260821-2100"
BRANCH_DV = "4593.2.4-nightly-20260821-2100"


def assert_ok(result: StepResult) -> StepResult:
    assert result.returncode == 0, result.output[-6000:]
    return result


def assert_cached(cache: BuildCache, *paths: str) -> None:
    """Each path exists under the cache root and is served over HTTPS with the same bytes."""
    for path in paths:
        local = cache.path(path)
        assert local.is_file(), f"{path} is not in the build cache"
        assert cache.fetch(path) == local.read_bytes(), f"{path} differs over HTTPS"


@pytest.fixture(scope="module", autouse=True)
def _own_build_cache(build_cache):
    """This module builds the versions other test modules build too: start and leave the cache empty."""
    build_cache.clear()
    yield
    build_cache.clear()


@pytest.fixture(autouse=True)
def _no_leftover_containers(docker_engine):
    """Every test's steps remove their containers (ci-cleanup.sh)."""
    yield
    assert docker_containers("flatcar-") == []


@dataclass
class Chain:
    origin: MiniOrigin
    results: dict[str, StepResult] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def run(self, cache: BuildCache, root: Path, name: str, ref: str, script: str, function: str, *args: str):
        started = time.monotonic()
        result = assert_ok(
            run_step(self.origin.url, ref, script, function, *args, cwd_root=root, cache=cache)
        )
        self.seconds[name] = round(time.monotonic() - started, 1)
        self.results[name] = result
        assert docker_containers("flatcar-") == [], f"{name} left containers behind"
        return result


@pytest.fixture(scope="module")
def main_chain(seed_sdk, build_cache, tmp_path_factory) -> Chain:
    """A full build on main for amd64, run once for the module's tests."""
    root = tmp_path_factory.mktemp("main-chain")
    chain = Chain(make_mini_origin(root / "scripts.git"))
    cache = build_cache
    chain.run(
        cache, root, "sdk_bootstrap", "main", "sdk_bootstrap.sh", "sdk_bootstrap", seed_sdk, MAIN_NIGHTLY
    )
    chain.run(cache, root, "sdk_container", MAIN_NIGHTLY, "sdk_container.sh", "sdk_container_build")
    chain.run(cache, root, "packages", MAIN_NIGHTLY, "packages.sh", "packages_build", "amd64")
    chain.run(cache, root, "push_packages", MAIN_NIGHTLY, "push_pkgs.sh", "push_packages", "amd64")
    chain.run(cache, root, "image", MAIN_NIGHTLY, "image.sh", "image_build", "amd64")
    chain.run(cache, root, "vms", MAIN_NIGHTLY, "vms.sh", "vm_build", "amd64", "qemu_uefi", "vmware")
    chain.run(cache, root, "test", MAIN_NIGHTLY, "test.sh", "test_run", "amd64", "qemu_uefi")
    chain.run(
        cache,
        root,
        "image_changes",
        MAIN_NIGHTLY,
        "image_changes.sh",
        "image_changes",
        "amd64",
        "last-nightly",
    )
    print("main chain step durations (s):", chain.seconds)
    return chain


def test_main_chain_tags_and_pushes_main(main_chain):
    origin = main_chain.origin
    assert MAIN_NIGHTLY in origin.tags()
    # a main nightly is pushed to main too
    assert origin.head("main") == origin.tag_commit(MAIN_NIGHTLY)
    assert origin.versionfile(MAIN_NIGHTLY) == {
        "FLATCAR_VERSION": MAIN_VER,
        "FLATCAR_VERSION_ID": "4799.0.0",
        "FLATCAR_BUILD_ID": "nightly-20260821-2100",
        "FLATCAR_SDK_VERSION": MAIN_VER,
    }
    assert (
        origin.git("log", "-1", "--format=%an %s", MAIN_NIGHTLY) == f"flatcar-ci New version: {MAIN_NIGHTLY}"
    )
    # the build cache overrides stayed out of the tagged tree
    assert 'BUILDCACHE_PATH_PREFIX="/mnt/buckets/linode-bincache"' in origin.show(
        MAIN_NIGHTLY, "ci-automation/ci-config.env"
    )
    assert "/mnt/buckets" not in origin.show(MAIN_NIGHTLY, "ci-automation/ci-config.env").split("linode")[1]


def test_main_chain_artifacts_at_the_real_paths(main_chain, build_cache):
    cache = build_cache
    sdk = f"sdk/amd64/{MAIN_VER}/flatcar-sdk-amd64-{MAIN_VER}.tar.bz2"
    assert_cached(cache, sdk, f"{sdk}.DIGESTS")
    digests = cache.path(f"{sdk}.DIGESTS").read_text()
    assert digests.splitlines()[0] == "# MD5 HASH" and "# SHA1 HASH" in digests and "# SHA512 HASH" in digests
    with tarfile.open(cache.path(sdk), "r:bz2") as tar:
        assert tar.extractfile("etc/flatcar-sdk-version").read().decode().strip() == MAIN_VER
    logs = sorted(p.name for p in cache.path(f"build-logs/{MAIN_VER}").iterdir())
    assert any(name.startswith("sdk-bootstrap-logs-amd64-") and name.endswith(".tar.xz") for name in logs), (
        logs
    )
    assert any(name.startswith("packages-amd64-logs-") for name in logs), logs

    for name in ("flatcar-sdk-all", "flatcar-sdk-amd64", "flatcar-sdk-arm64", "flatcar-packages-amd64"):
        base = f"containers/{MAIN_DV}/{name}-{MAIN_DV}"
        assert_cached(cache, f"{base}.tar.zst", f"{base}.id", f"{base}.tar.zst.DIGESTS", f"{base}.id.DIGESTS")
        image = f"ghcr.io/flatcar/{name}:{MAIN_DV}" if "sdk" in name else f"{name}:{MAIN_DV}"
        assert cache.fetch(f"{base}.id").decode().strip() == image_id(image)

    pkgs = cache.path(f"boards/amd64-usr/{MAIN_VER}/pkgs")
    index = (pkgs / "Packages").read_text()
    assert "CPV: app-arch/zstd-1.5.7" in index and "CPV: dev-vcs/git-2.49.1" in index  # dev binpkgs too
    assert_cached(cache, f"boards/amd64-usr/{MAIN_VER}/pkgs/coreos-base/coreos-init-0.0.1-r152.gpkg.tar")

    images = f"images/amd64/{MAIN_VER}"
    generic = [
        "flatcar_production_image.bin.bz2",
        "flatcar_production_image_sysext.squashfs",
        "flatcar_production_image.vmlinuz",
        "version.txt",
        "flatcar_test_update.gz",
        "flatcar_developer_container.bin.bz2",
        "oem-azure.raw",
        "oem-gce.raw",
        "docker-flatcar.raw",
        "flatcar_production_image_packages.txt",
        "flatcar_production_image_contents.txt",
    ]
    vendor = [
        "flatcar_production_qemu_uefi_image.img.bz2",
        "flatcar_production_qemu_uefi_image.img",
        "flatcar_production_qemu_uefi_efi_code.qcow2",
        "flatcar_production_qemu_uefi_efi_vars.qcow2",
        "flatcar_production_vmware_image.vmdk.bz2",
        "flatcar_production_vmware.vmx",
        "flatcar_production_vmware_ova.ova",
        "flatcar_production_vmware_raw_image.bin.bz2",
    ]
    assert_cached(cache, *(f"{images}/{f}" for f in generic + vendor))
    assert_cached(cache, *(f"{images}/{f}.DIGESTS" for f in generic + vendor))
    assert not cache.path(f"{images}/flatcar_production_image.bin").exists()
    assert f"FLATCAR_VERSION={MAIN_VER}" in cache.fetch(f"{images}/version.txt").decode()
    generic_image = bz2.decompress(cache.fetch(f"{images}/flatcar_production_image.bin.bz2"))
    with tarfile.open(fileobj=io.BytesIO(generic_image)) as tar:
        release = tar.extractfile("./usr/share/flatcar/release").read().decode()
    assert f"FLATCAR_RELEASE_VERSION={MAIN_VER}" in release and "FLATCAR_RELEASE_BOARD=amd64-usr" in release
    packages = cache.fetch(f"{images}/flatcar_production_image_packages.txt").decode().split()
    assert "sys-apps/systemd-257.7::portage-stable" in packages
    assert not any("docker" in p or "oem-" in p or "dev-vcs" in p for p in packages)  # sysexts / dev only

    testing = f"testing/{MAIN_VER}/amd64/qemu_uefi"
    assert_cached(
        cache,
        *(
            f"{testing}/{f}"
            for f in (
                "results-run-1.tap",
                "results-qemu_uefi.tap",
                "results-qemu_uefi.md",
                "results-qemu_uefi-detailed.tap",
                "results-qemu_uefi-detailed.md",
            )
        ),
    )
    assert cache.path(f"{testing}/_kola_temp").is_dir()
    summary = cache.fetch(f"{testing}/results-qemu_uefi.tap").decode()
    assert summary.splitlines()[:2] == ["1..4", f"ok - Version: {MAIN_VER}, Architecture: amd64"]
    assert "ok - cl.basic" in summary and "not ok" not in summary


def test_main_chain_workspace_outputs(main_chain):
    results = main_chain.results
    # test_run leaves the merged reports in the work tree root, like the real one
    ws = results["test"].workspace
    assert (ws / "results-qemu_uefi.tap").is_file()
    assert (ws / "__TESTS__/qemu_uefi/results-run-1.tap").read_text().startswith("TAP version 13\n1..3\n")
    assert not (ws / "__TESTS__/qemu_uefi/results-run-2.tap").exists()
    # image and vms leave their outputs in images/latest/
    assert (results["image"].workspace / "images/latest/flatcar_production_image.bin.bz2").is_file()
    assert (results["vms"].workspace / "images/latest/flatcar_production_vmware_ova.ova").is_file()
    # every step that started containers recorded their removal
    for step in ("packages", "push_packages", "image", "vms", "test"):
        assert "rm -f" in results[step].cleanup_script, step
    assert "'docker' container rm -f 'flatcar-packages-amd64-" + MAIN_DV in results["packages"].cleanup_script
    # the SDK bootstrap did not find the seed's images, so it did not take the nightly shortcut
    assert "No changes but continuing build" in results["sdk_bootstrap"].output
    # image_changes had no images of the previous nightly to compare with
    assert "main-4798.0.0-nightly-20260820-2100" in results["image_changes"].output
    assert "not in the build cache" in results["image_changes"].output


def test_image_changes_reports_package_and_size_changes(main_chain, build_cache, tmp_path):
    # Pretend the previous nightly was built with an older systemd and without curl.
    previous = build_cache.path("images/amd64/4798.0.0+nightly-20260820-2100")
    previous.mkdir(parents=True)
    current = build_cache.path(f"images/amd64/{MAIN_VER}")
    packages = (current / "flatcar_production_image_packages.txt").read_text()
    packages = packages.replace("systemd-257.7", "systemd-256.1").replace(
        "net-misc/curl-8.15.0::portage-stable\n", ""
    )
    (previous / "flatcar_production_image_packages.txt").write_text(packages)
    contents = (current / "flatcar_production_image_contents.txt").read_text().splitlines()
    (previous / "flatcar_production_image_contents.txt").write_text("\n".join(contents[:-1]) + "\n")
    try:
        rc, output = run_step(
            main_chain.origin.url,
            MAIN_NIGHTLY,
            "image_changes.sh",
            "image_changes",
            "amd64",
            "last-nightly",
            cwd_root=tmp_path,
        )
    finally:
        for path in previous.iterdir():
            path.unlink()
        previous.rmdir()
    assert rc == 0, output
    assert "compared to development version main-4798.0.0-nightly-20260820-2100" in output
    assert "~sys-apps/systemd: 256.1 -> 257.7" in output
    assert "+net-misc/curl-8.15.0" in output
    assert "Total size of the image files:" in output


def test_flaky_tests_fail_once_then_pass(main_chain, build_cache, tmp_path):
    result = run_step(
        main_chain.origin.url,
        MAIN_NIGHTLY,
        "test.sh",
        "test_run",
        "amd64",
        "qemu",
        env={"MINI_FLAKY_TESTS": "cl.network.ping"},
        cwd_root=tmp_path,
    )
    assert_ok(result)
    tests_dir = result.workspace / "__TESTS__/qemu"
    run1 = (tests_dir / "results-run-1.tap").read_text()
    assert "not ok 2 - cl.network.ping" in run1 and "ok 1 - cl.basic" in run1
    assert "failed on the first run as asked (MINI_FLAKY_TESTS)" in run1
    # only the failed test is re-run
    assert (tests_dir / "results-run-2.tap").read_text().splitlines()[1:3] == [
        "1..1",
        "ok 1 - cl.network.ping",
    ]
    summary = (result.workspace / "results-qemu.tap").read_text()
    assert "not ok" not in summary
    assert "Succeeded: qemu (2)" in summary and "Failed: qemu (1)" in summary
    assert "Error messages" not in summary
    detailed = (result.workspace / "results-qemu-detailed.tap").read_text()
    assert "Error messages for qemu, run 1:" in detailed and "MINI_FLAKY_TESTS" in detailed
    cached = f"testing/{MAIN_VER}/amd64/qemu"
    assert build_cache.fetch(f"{cached}/results-qemu.tap").decode() == summary
    assert_cached(build_cache, f"{cached}/results-run-1.tap", f"{cached}/results-run-2.tap")


def test_broken_tests_give_up_after_max_retries(main_chain, tmp_path):
    result = run_step(
        main_chain.origin.url,
        MAIN_NIGHTLY,
        "test.sh",
        "test_run",
        "amd64",
        "qemu_uefi",
        "cl.basic",
        env={"MINI_BROKEN_TESTS": "cl.basic", "MAX_RETRIES": "2"},
        cwd_root=tmp_path,
    )
    assert result.returncode == 1
    assert "All re-runs exhausted (2). Giving up." in result.output
    summary = (result.workspace / "results-qemu_uefi.tap").read_text()
    assert summary.splitlines()[0] == "1..2"
    assert "not ok - cl.basic" in summary and "Error messages for qemu_uefi, run 2:" in summary


def test_unsupported_arch_breaks_the_retry_loop(main_chain, build_cache, tmp_path):
    # Non-UEFI qemu cannot test arm64: one "not ok", no re-runs, no arm64 images needed. As in the real
    # scripts kola never ran, so there is no _kola_temp to upload: rsync fails (23) and nothing is published.
    result = run_step(
        main_chain.origin.url, MAIN_NIGHTLY, "test.sh", "test_run", "arm64", "qemu", cwd_root=tmp_path
    )
    assert result.returncode != 0
    assert "ERROR: arm64 tests not supported on qemu." in result.output
    assert "Test cycle requested to break" in result.output
    tests_dir = result.workspace / "__TESTS__/qemu"
    assert "not ok - all qemu tests" in (tests_dir / "results-run-1.tap").read_text()
    assert not (tests_dir / "results-run-2.tap").exists()
    assert "not ok - all qemu tests" in (result.workspace / "results-qemu.tap").read_text()
    assert not build_cache.path(f"testing/{MAIN_VER}/arm64/qemu/results-qemu.tap").exists()


def test_missing_vendor_image_fails_the_test_step(main_chain, tmp_path):
    rc, output = run_step(
        main_chain.origin.url, MAIN_NIGHTLY, "test.sh", "test_run", "amd64", "azure", cwd_root=tmp_path
    )
    assert rc == 1
    assert (
        f"images/amd64/{MAIN_VER}/flatcar_production_azure_image.vhd.bz2 is not in the build cache" in output
    )


def test_vm_build_rejects_an_unknown_format(main_chain, tmp_path):
    rc, output = run_step(
        main_chain.origin.url, MAIN_NIGHTLY, "vms.sh", "vm_build", "amd64", "floppy", cwd_root=tmp_path
    )
    assert rc != 0
    assert "Invalid image format 'floppy'" in output


def test_sdk_bootstrap_takes_the_nightly_shortcut(main_chain, build_cache, tmp_path):
    # main is at the nightly's tag now; with its SDK container and both arches' images in the cache,
    # the next night's bootstrap stops without tagging.
    arm64 = build_cache.path(f"images/arm64/{MAIN_VER}")
    arm64.mkdir(parents=True)
    (arm64 / "flatcar_production_image.bin.bz2").write_bytes(b"stand-in")
    try:
        rc, output = run_step(
            main_chain.origin.url,
            "main",
            "sdk_bootstrap.sh",
            "sdk_bootstrap",
            "4798.0.0+nightly-20260820-2100",
            "main-4800.0.0-nightly-20260822-2100",
            cwd_root=tmp_path,
        )
    finally:
        (arm64 / "flatcar_production_image.bin.bz2").unlink()
        arm64.rmdir()
    assert rc == 0, output
    assert f"Stopping build because there are no changes since tag {MAIN_NIGHTLY}" in output
    assert "main-4800.0.0-nightly-20260822-2100" not in main_chain.origin.tags()


def test_os_only_chain_on_a_maintenance_branch(mini_origin, released_sdk, build_cache, tmp_path):
    origin = mini_origin
    branch_before = origin.head("flatcar-4593")
    started = time.monotonic()
    assert_ok(
        run_step(
            origin.url, "flatcar-4593", "packages-tag.sh", "packages_tag", BRANCH_NIGHTLY, cwd_root=tmp_path
        )
    )
    assert BRANCH_NIGHTLY in origin.tags()
    assert origin.head("flatcar-4593") == origin.tag_commit(BRANCH_NIGHTLY) != branch_before
    assert origin.versionfile(BRANCH_NIGHTLY)["FLATCAR_SDK_VERSION"] == RELEASED_SDK_VERSION
    assert origin.versionfile(BRANCH_NIGHTLY)["FLATCAR_VERSION"] == BRANCH_VER
    for arch in ("amd64", "arm64"):
        assert_ok(
            run_step(origin.url, BRANCH_NIGHTLY, "packages.sh", "packages_build", arch, cwd_root=tmp_path)
        )
        assert_ok(run_step(origin.url, BRANCH_NIGHTLY, "image.sh", "image_build", arch, cwd_root=tmp_path))
    print(f"flatcar-4593 chain: {time.monotonic() - started:.1f} s")
    for arch in ("amd64", "arm64"):
        assert_cached(
            build_cache,
            f"containers/{BRANCH_DV}/flatcar-packages-{arch}-{BRANCH_DV}.tar.zst",
            f"images/{arch}/{BRANCH_VER}/flatcar_production_image.bin.bz2",
        )
        assert build_cache.fetch(f"images/{arch}/{BRANCH_VER}/flatcar_production_image.bin.bz2")
    # the packages logs go to the SDK version's directory, as in the real scripts
    assert any(
        p.name.startswith("packages-arm64-logs-") for p in build_cache.path("build-logs/4593.0.0").iterdir()
    )
    # an official SDK came from the cache's release copy: the local image was up to date
    version_txt = build_cache.fetch(f"images/arm64/{BRANCH_VER}/version.txt").decode()
    assert "FLATCAR_SDK_VERSION=4593.0.0" in version_txt and "FLATCAR_BRANCH=2" in version_txt

    # The next night nothing changed and the images exist: no tag, ./skip-build instead.
    tags_before = origin.tags()
    result = assert_ok(
        run_step(
            origin.url,
            "flatcar-4593",
            "packages-tag.sh",
            "packages_tag",
            "stable-4593.2.4-nightly-20260822-2100",
            cwd_root=tmp_path,
        )
    )
    assert (result.workspace / "skip-build").exists()
    assert "Creating ./skip-build flag file" in result.output
    assert origin.tags() == tags_before

    # last-release: the release stable-4593.2.4 has no images in this cache
    rc, output = run_step(
        origin.url,
        BRANCH_NIGHTLY,
        "image_changes.sh",
        "image_changes",
        "amd64",
        "last-release",
        cwd_root=tmp_path,
    )
    assert rc == 0, output
    assert "release stable-4593.2.4 (4593.2.4, amd64) are not in the build cache" in output


def test_packages_fail_without_the_sdk(mini_origin, released_sdk, build_cache, tmp_path):
    # The released SDK's images exist locally, but the registry cannot be reached and the build cache has
    # no copy with their .id: the local images cannot be trusted, so the step fails.
    shutil.rmtree(build_cache.path(f"containers/{RELEASED_SDK_VERSION}"))
    assert_ok(
        run_step(
            mini_origin.url,
            "flatcar-4593",
            "packages-tag.sh",
            "packages_tag",
            BRANCH_NIGHTLY,
            cwd_root=tmp_path,
        )
    )
    rc, output = run_step(
        mini_origin.url, BRANCH_NIGHTLY, "packages.sh", "packages_build", "amd64", cwd_root=tmp_path
    )
    assert rc != 0
    assert "Local image outdated, downloading..." in output
    assert "The requested URL returned error: 404" in output
    assert "build_packages" not in output


def test_tag_created_beforehand_is_reused(mini_origin, build_cache, tmp_path):
    # The orchestrator tagged (and pushed the branch) before the step ran, with the same tree.
    version = "stable-4593.2.4-nightly-20260823-2100"
    work = mini_origin.clone(tmp_path / "tagger", "flatcar-4593")
    (work / "sdk_container/.repo/manifests/version.txt").write_text(
        "FLATCAR_VERSION=4593.2.4+nightly-20260823-2100\nFLATCAR_VERSION_ID=4593.2.4\n"
        'FLATCAR_BUILD_ID="nightly-20260823-2100"\nFLATCAR_SDK_VERSION=4593.0.0\n'
    )
    git = ["git", "-C", str(work), "-c", "user.name=Test Dev", "-c", "user.email=dev@example.org"]
    for args in (
        ["commit", "-qam", f"New version: {version}"],
        ["tag", version],
        ["push", "-q", "origin", "HEAD:flatcar-4593", version],
    ):
        subprocess.run([*git, *args], check=True, capture_output=True)
    tagged = mini_origin.tag_commit(version)

    rc, output = run_step(
        mini_origin.url, "flatcar-4593", "packages-tag.sh", "packages_tag", version, cwd_root=tmp_path
    )
    assert rc == 0, output
    assert "Reusing existing tag" in output
    assert mini_origin.tag_commit(version) == tagged == mini_origin.head("flatcar-4593")


def test_tag_with_another_tree_fails(mini_origin, build_cache, tmp_path):
    # a dev tag made from main's tree cannot be re-made from flatcar-4593's
    version = "stable-4593.2.5-my-fix"
    work = mini_origin.clone(tmp_path / "tagger", "main")
    subprocess.run(["git", "-C", str(work), "tag", version], check=True)
    subprocess.run(["git", "-C", str(work), "push", "-q", "origin", version], check=True, capture_output=True)
    rc, output = run_step(
        mini_origin.url, "flatcar-4593", "packages-tag.sh", "packages_tag", version, cwd_root=tmp_path
    )
    assert rc == 1
    assert "Remote tag exists already and is not equal" in output


def test_nightly_must_be_built_from_the_branch_tip(mini_origin, build_cache, tmp_path):
    rc, output = run_step(
        mini_origin.url,
        "stable-4593.2.4",
        "packages-tag.sh",
        "packages_tag",
        BRANCH_NIGHTLY,
        cwd_root=tmp_path,
    )
    assert rc == 0, output  # the release tag is the branch tip
    mini_origin.push_change("flatcar-4593", "README.md", "changed\n")
    rc, output = run_step(
        mini_origin.url,
        "stable-4593.2.4",
        "packages-tag.sh",
        "packages_tag",
        "stable-4593.2.4-nightly-20260824-2100",
        cwd_root=tmp_path,
    )
    assert rc == 1
    assert "we are not on top of the flatcar-4593 branch" in output


def test_invalid_version_is_refused(mini_origin, build_cache, tmp_path):
    rc, output = run_step(
        mini_origin.url, "main", "packages-tag.sh", "packages_tag", "4799.0.0", cwd_root=tmp_path
    )
    assert rc == 1
    assert "ERROR: invalid version '4799.0.0'" in output


def test_mini_fail_step(mini_origin, build_cache, tmp_path):
    rc, output = run_step(
        mini_origin.url,
        "flatcar-4593",
        "packages-tag.sh",
        "packages_tag",
        BRANCH_NIGHTLY,
        env={"MINI_FAIL_STEP": "packages_tag"},
        cwd_root=tmp_path,
    )
    assert rc == 1
    assert "mini-scripts: failing packages_tag as asked" in output.splitlines()
    assert BRANCH_NIGHTLY not in mini_origin.tags()


def test_mini_fail_step_on_one_arch_and_fail_once(mini_origin, build_cache, tmp_path):
    """``<fn>@<arch>`` fails only that arch; MINI_FAIL_ONCE fails the first run only (its state directory)."""

    def image_changes(arch: str, **env: str) -> StepResult:
        # At the release tag there is no earlier nightly: the step has nothing to compare and succeeds.
        return run_step(
            mini_origin.url,
            "stable-4593.2.4",
            "image_changes.sh",
            "image_changes",
            arch,
            "last-nightly",
            env=env,
            cwd_root=tmp_path,
        )

    nothing_to_compare = "No earlier nightly tag found: nothing to compare 4593.2.4 ({arch}) with."
    for arch in ("amd64", "arm64"):
        assert_ok(image_changes(arch))
    rc, output = image_changes("arm64", MINI_FAIL_STEP="packages_tag,image_changes@arm64")
    assert rc == 1
    assert "mini-scripts: failing image_changes on arm64 as asked" in output.splitlines()
    assert nothing_to_compare.format(arch="arm64") not in output
    rc, output = assert_ok(image_changes("amd64", MINI_FAIL_STEP="image_changes@arm64"))
    assert nothing_to_compare.format(arch="amd64") in output.splitlines() and "failing" not in output
    # A plain <fn> still fails every arch; @<arch> never matches a step that takes no arch.
    rc, output = image_changes("amd64", MINI_FAIL_STEP="image_changes")
    assert rc == 1 and "mini-scripts: failing image_changes as asked" in output.splitlines()
    assert_ok(
        run_step(
            mini_origin.url,
            "flatcar-4593",
            "packages-tag.sh",
            "packages_tag",
            BRANCH_NIGHTLY,
            env={"MINI_FAIL_STEP": "packages_tag@amd64"},
            cwd_root=tmp_path,
        )
    )
    assert BRANCH_NIGHTLY in mini_origin.tags()

    # Fail once: the first arm64 run fails, the next succeeds; amd64 never fails; a new state directory
    # fails again.
    state = tmp_path / "mini-state"
    once = {"MINI_FAIL_ONCE": "image_changes@arm64", "MINI_STATE_DIR": str(state)}
    assert_ok(image_changes("amd64", **once))
    rc, output = image_changes("arm64", **once)
    assert rc == 1 and "mini-scripts: failing image_changes on arm64 as asked" in output.splitlines()
    assert (state / "failed-once" / "image_changes@arm64").is_dir()
    rc, output = assert_ok(image_changes("arm64", **once))
    assert nothing_to_compare.format(arch="arm64") in output.splitlines()
    rc, output = image_changes("arm64", **{**once, "MINI_STATE_DIR": str(tmp_path / "other-state")})
    assert rc == 1
    rc, output = image_changes("arm64", MINI_FAIL_ONCE="image_changes@arm64")
    assert rc == 1 and "mini-scripts: MINI_FAIL_ONCE needs MINI_STATE_DIR" in output.splitlines()


def test_mini_slow_step(mini_origin, build_cache, tmp_path):
    started = time.monotonic()
    rc, output = run_step(
        mini_origin.url,
        "main",
        "packages-tag.sh",
        "packages_tag",
        "main-4798.0.1-slow",
        env={"MINI_SLOW_STEP": "packages_tag:2"},
        cwd_root=tmp_path,
    )
    assert rc == 0, output
    assert time.monotonic() - started >= 2


def test_mini_hang_step_and_cleanup(mini_origin, seed_sdk, build_cache, tmp_path):
    """A hanging step keeps a container and a child process; killing its process group and running
    ./ci-cleanup.sh leaves nothing behind."""
    workspace = mini_origin.clone(tmp_path / "ws", "flatcar-4593")
    with (workspace / "ci-automation/ci-config.env").open("a") as config:
        config.write(build_cache.config_overrides())
    env = {**os.environ, **build_cache.env(), "MINI_HANG_STEP": "packages_tag", "HOME": str(tmp_path)}
    proc = subprocess.Popen(
        ["bash", "-c", f"source ci-automation/packages-tag.sh; packages_tag {BRANCH_NIGHTLY}"],
        cwd=workspace,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("mini-scripts: hanging with child process"):
            break
    assert "mini-scripts: hanging packages_tag" in lines, lines
    child = int(lines[-1].split("child process ")[1].split()[0])
    container = f"flatcar-packages-tag-{BRANCH_DV}"
    assert docker_containers(container) == [container]
    assert not _gone(child, timeout=0.2)

    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=10)
    cleanup = (workspace / "ci-cleanup.sh").read_text()
    assert cleanup.startswith("#!/bin/bash\n") and f"container rm -f '{container}'" in cleanup
    subprocess.run(["bash", "./ci-cleanup.sh"], cwd=workspace, check=True, capture_output=True)
    assert docker_containers(container) == []
    assert _gone(child)


def _gone(pid: int, timeout: float = 5) -> bool:
    """True once the process does not exist or is a zombie (its parent died; init reaps it eventually)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False
