"""Every step operator through every runner under ``dag.test()``: the miniature scripts repository,
a real dockerd, the sshd + rsync build cache with its HTTPS server, and real git origins.

One DAG per runner builds a full chain on main (tag → SDK bootstrap → SDK container → packages → push
packages → image → vendor images → tests → image changes) and an OS-only chain on flatcar-4593 (tag →
packages tag → packages → image). The artifacts must be in the cache at the scripts' paths.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from airflow.sdk import DAG, task

from flatcar_airflow.operators import (
    ImageChangesOperator,
    ImageOperator,
    PackagesOperator,
    PackagesTagOperator,
    PushPackagesOperator,
    SdkBootstrapOperator,
    SdkContainerOperator,
    VendorImagesOperator,
)
from flatcar_airflow.operators import (
    TestsOperator as VendorTestsOperator,
)

START = dt.datetime(2026, 8, 1, tzinfo=dt.UTC)
NIGHT = dt.datetime(2026, 8, 21, 21, 0, tzinfo=dt.UTC)
#: Another night, for tests that build a second version.
OTHER_NIGHT = dt.datetime(2026, 9, 20, 21, 0, tzinfo=dt.UTC)
from connections import CACHE_CONN, HOST_CONN  # noqa: E402


@pytest.fixture(autouse=True)
def _empty_cache(build_cache):
    """Each test starts with an empty build cache: no test may reuse another's artifacts."""
    build_cache.clear()
    yield
    build_cache.clear()


@pytest.fixture(params=["local", "ssh", "docker"])
def deployment(request, tmp_path, mini_origin):
    """(runner configuration, scripts repo URL) for one kind of runner."""
    root = tmp_path / "build-root"
    root.mkdir()
    origin = str(mini_origin.path)
    if request.param == "docker":
        image = request.getfixturevalue("runner_image")
        origin = str(root / "scripts.git")
        shutil.copytree(mini_origin.path, origin)
        return {"type": "docker", "image": image, "root": str(root)}, origin, mini_origin
    if request.param == "ssh":
        return (
            {"type": "ssh", "ssh_conn_id": HOST_CONN, "root": str(root), "poll_interval": 0.3},
            origin,
            mini_origin,
        )
    return {"type": "local", "root": str(root)}, origin, mini_origin


def _tag_task(origin: str, ref: str, kind: str, cache_dir: str, when: dt.datetime = NIGHT):
    @task(task_id="tag")
    def tag_build():
        from flatcar_airflow.nightly import main_nightly
        from flatcar_airflow.scripts_repo import ScriptsRepo
        from flatcar_airflow.tagging import BuildKind, TagRequest, nightly_version, tag_version

        repo = ScriptsRepo(origin, cache_dir=__import__("pathlib").Path(cache_dir))
        build_kind = BuildKind(kind)
        version = (
            main_nightly(NIGHT)
            if build_kind is BuildKind.FULL
            else nightly_version(repo, ref, build_kind, NIGHT)
        )
        return tag_version(repo, TagRequest(version=version, ref=ref, kind=build_kind)).to_dict()

    return tag_build()


def test_full_chain_through_each_runner(run_dag, connections, deployment, seed_sdk, build_cache, tmp_path):
    runner, origin, _ = deployment
    common = {
        "scripts_repo": origin,
        "runner": runner,
        "buildcache_conn_id": CACHE_CONN,
        "heartbeat_interval": 5,
    }
    with DAG(f"e2e_full_{runner['type']}", schedule=None, start_date=START) as dag:
        build = _tag_task(origin, "main", "full", str(tmp_path / "tag-cache"))
        boot = SdkBootstrapOperator(task_id="sdk_bootstrap", build=build, seed_version=seed_sdk, **common)
        sdk = SdkContainerOperator(task_id="sdk_container", build=build, inputs=boot.output, **common)
        packages = PackagesOperator(
            task_id="packages", build=build, arch="amd64", inputs=sdk.output, **common
        )
        push = PushPackagesOperator(
            task_id="push_packages", build=build, arch="amd64", inputs=packages.output, **common
        )
        image = ImageOperator(task_id="image", build=build, arch="amd64", inputs=packages.output, **common)
        vms = VendorImagesOperator(
            task_id="vms",
            build=build,
            arch="amd64",
            formats=["qemu_uefi", "vmware"],
            inputs=image.output,
            **common,
        )
        tests = VendorTestsOperator(
            task_id="test_qemu_uefi",
            build=build,
            arch="amd64",
            vendor="qemu_uefi",
            inputs=vms.output,
            env={"MAX_RETRIES": "3"},
            **common,
        )
        changes = ImageChangesOperator(
            task_id="image_changes", build=build, arch="amd64", compare_to="last-nightly", **common
        )
        boot >> sdk >> packages >> [push, image]
        image >> vms >> tests
        image >> changes

    run = run_dag(dag, logical_date=None)

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert set(states.values()) == {"success"}, states
    tag = "main-4799.0.0-nightly-20260821-2100"
    ver, dv = "4799.0.0+nightly-20260821-2100", "4799.0.0-nightly-20260821-2100"
    tagged, head = (
        subprocess.run(
            ["git", "rev-parse", rev], cwd=origin, capture_output=True, text=True, check=True
        ).stdout.strip()
        for rev in (f"refs/tags/{tag}^{{commit}}", "refs/heads/main")
    )
    assert tagged == head  # the nightly advanced main
    root = build_cache.root
    expected = [
        f"sdk/amd64/{ver}/flatcar-sdk-amd64-{ver}.tar.bz2",
        *(f"containers/{dv}/flatcar-sdk-{f}-{dv}.tar.zst" for f in ("all", "amd64", "arm64")),
        f"containers/{dv}/flatcar-packages-amd64-{dv}.tar.zst",
        f"containers/{dv}/flatcar-packages-amd64-{dv}.id",
        f"boards/amd64-usr/{ver}/pkgs/Packages",
        f"images/amd64/{ver}/flatcar_production_image.bin.bz2",
        f"testing/{ver}/amd64/qemu_uefi/results-qemu_uefi.tap",
    ]
    for path in expected:
        assert (root / path).is_file(), path

    def xcom(task_id, key="return_value"):
        return run.get_task_instance(task_id).xcom_pull(task_ids=task_id, key=key)

    sdk_record = xcom("sdk_container")
    assert {a["path"] for a in sdk_record["artifacts"]} >= {expected[1], expected[2], expected[3]}
    assert all(a["image_id"] and a["url"].startswith(build_cache.https_url) for a in sdk_record["artifacts"])
    vendor_formats = {a["extra"]["format"] for a in xcom("vms")["artifacts"]}
    assert {"qemu_uefi", "vmware"} <= vendor_formats
    assert xcom("test_qemu_uefi", "tests")["failed"] == 0
    # image_changes prints its report; the operator stores it next to the images, for the builds page.
    report = root / f"images/amd64/{ver}/flatcar-airflow-image-changes.txt"
    assert [a["kind"] for a in xcom("image_changes")["artifacts"]] == ["report"]
    lines = report.read_text().splitlines()
    assert lines and not any(line.startswith("[flatcar-airflow]") for line in lines), lines
    assert "nothing to compare" in report.read_text() or "packages" in report.read_text()
    assert xcom("test_qemu_uefi")["tests"]["passed"] >= 1
    # nothing secret went into XCom
    secret = connections["extra"]["private_key"].strip().splitlines()[1]
    for ti in run.get_task_instances():
        assert secret not in json.dumps(xcom(ti.task_id), default=str)
    # no step container is left behind
    left = subprocess.run(
        ["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True
    ).stdout
    assert not [name for name in left.split() if name.startswith("flatcar-")], left


def test_os_only_chain_through_each_runner(
    run_dag, connections, deployment, build_cache, released_sdk, tmp_path
):
    runner, origin, _ = deployment
    common = {"scripts_repo": origin, "runner": runner, "buildcache_conn_id": CACHE_CONN}
    with DAG(f"e2e_os_{runner['type']}", schedule=None, start_date=START) as dag:
        build = _tag_task(origin, "flatcar-4593", "os", str(tmp_path / "tag-cache"))
        packages_tag = PackagesTagOperator(task_id="packages_tag", build=build, **common)
        packages = PackagesOperator(task_id="packages", build=build, arch="amd64", **common)
        image = ImageOperator(task_id="image", build=build, arch="amd64", inputs=packages.output, **common)
        packages_tag >> packages >> image

    run = run_dag(dag, logical_date=None)

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert set(states.values()) == {"success"}, states
    ver, dv = "4593.2.4+nightly-20260821-2100", "4593.2.4-nightly-20260821-2100"
    assert (build_cache.root / f"containers/{dv}/flatcar-packages-amd64-{dv}.tar.zst").is_file()
    assert (build_cache.root / f"images/amd64/{ver}/flatcar_production_image.bin.bz2").is_file()
    record = run.get_task_instance("image").xcom_pull(task_ids="image")
    assert record["sdk_version"] == "4593.0.0" and record["version"] == ver
    assert f"images/amd64/{ver}/flatcar_production_image.bin.bz2" in {a["path"] for a in record["artifacts"]}


def _states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_skip_build_skips_downstream_and_reruns_reuse_outputs(
    run_dag, connections, build_cache, released_sdk, mini_origin, tmp_path, capfd
):
    """packages_tag's ./skip-build stops the build as skipped; a re-run of a step with outputs reuses them."""
    origin = str(mini_origin.path)
    common = {
        "scripts_repo": origin,
        "runner": {"type": "local", "root": str(tmp_path / "root")},
        "buildcache_conn_id": CACHE_CONN,
    }

    def dag_for(name: str) -> DAG:
        with DAG(name, schedule=None, start_date=START) as dag:
            build = _tag_task(origin, "flatcar-4593", "os", str(tmp_path / "tag-cache"), OTHER_NIGHT)
            packages_tag = PackagesTagOperator(task_id="packages_tag", build=build, **common)
            for arch in ("amd64", "arm64"):
                packages = PackagesOperator(task_id=f"packages_{arch}", build=build, arch=arch, **common)
                image = ImageOperator(
                    task_id=f"image_{arch}", build=build, arch=arch, inputs=packages.output, **common
                )
                packages_tag >> packages >> image
        return dag

    first = run_dag(dag_for("e2e_skip_first"), logical_date=None)
    assert set(_states(first).values()) == {"success"}, _states(first)
    capfd.readouterr()

    # The same nightly again: the branch head carries its tag, nothing changed, both images exist.
    again = run_dag(dag_for("e2e_skip_again"), logical_date=None)

    states = _states(again)
    assert states["tag"] == "success" and states["packages_tag"] == "skipped", states
    assert {states[f"{step}_{arch}"] for step in ("packages", "image") for arch in ("amd64", "arm64")} == {
        "skipped"
    }
    assert "wrote ./skip-build" in capfd.readouterr().out

    # Without packages_tag, a re-run finds the outputs and does not build again.
    with DAG("e2e_rerun", schedule=None, start_date=START) as dag:
        build = _tag_task(origin, "flatcar-4593", "os", str(tmp_path / "tag-cache"), OTHER_NIGHT)
        PackagesOperator(task_id="packages_amd64", build=build, arch="amd64", **common)
    rerun = run_dag(dag, logical_date=None)
    record = rerun.get_task_instance("packages_amd64").xcom_pull(task_ids="packages_amd64")
    assert record["reused"] is True and record["artifacts"][0]["image_id"]
    assert "exist already: not building again" in capfd.readouterr().out

    # Fault drill: an attempt cut mid-upload (a full cache disk) leaves a truncated file under its name
    # (the scripts' rsync --partial). Here one output is missing, so attempt 1 runs the step, which fails;
    # between the attempts the truncated file appears. The retry must build again, not reference it.
    (packed,) = [a["path"] for a in record["artifacts"] if a["path"].endswith(".tar.zst")]
    tarball = build_cache.root / packed
    whole = tarball.read_bytes()
    tarball.unlink()

    def truncate_between_attempts(context) -> None:
        tarball.write_bytes(whole[: len(whole) // 2])

    with DAG("e2e_retry_after_cut", schedule=None, start_date=START) as dag:
        build = _tag_task(origin, "flatcar-4593", "os", str(tmp_path / "tag-cache"), OTHER_NIGHT)
        PackagesOperator(
            task_id="packages_amd64",
            build=build,
            arch="amd64",
            retries=1,
            retry_delay=dt.timedelta(0),
            on_retry_callback=truncate_between_attempts,
            env={"MINI_FAIL_ONCE": "packages_build", "MINI_STATE_DIR": str(tmp_path / "mini-state")},
            **common,
        )
    retried = run_dag(dag, logical_date=None)
    ti = retried.get_task_instance("packages_amd64")
    assert ti.state == "success" and ti.try_number == 2
    record = ti.xcom_pull(task_ids="packages_amd64")
    assert record["reused"] is False
    assert "running the step again rather than reusing" in capfd.readouterr().out
    sizes = {a["path"]: a["size"] for a in record["artifacts"]}
    assert sizes[str(tarball.relative_to(build_cache.root))] == tarball.stat().st_size > len(whole) // 2


def test_missing_input_fails_before_the_step_runs(
    run_dag, connections, build_cache, mini_origin, tmp_path, capfd
):
    origin = str(mini_origin.path)
    root = tmp_path / "root"
    with DAG("e2e_missing_input", schedule=None, start_date=START) as dag:
        build = _tag_task(origin, "main", "full", str(tmp_path / "tag-cache"), OTHER_NIGHT)
        PackagesOperator(
            task_id="packages",
            build=build,
            arch="amd64",
            scripts_repo=origin,
            retries=2,
            runner={"type": "local", "root": str(root)},
            buildcache_conn_id=CACHE_CONN,
        )

    run = run_dag(dag, logical_date=None)

    ti = run.get_task_instance("packages")
    assert ti.state == "failed" and ti.try_number == 1  # no retries for a missing input
    out = capfd.readouterr().out
    dv = "4799.0.0-nightly-20260821-2100"
    assert (
        f"missing input(s) in the build cache: container containers/{dv}/flatcar-sdk-amd64-{dv}.tar.zst"
        in out
    )
    assert not (root / "jobs").exists() and not (root / "workspaces").exists()  # the step never started


def test_invalid_options_fail_without_side_effects(run_dag, connections, mini_origin, tmp_path, capfd):
    origin = str(mini_origin.path)
    root = tmp_path / "root"
    with DAG("e2e_bad_format", schedule=None, start_date=START) as dag:
        build = _tag_task(origin, "main", "full", str(tmp_path / "tag-cache"))
        VendorImagesOperator(
            task_id="vms",
            build=build,
            arch="amd64",
            formats=["qemu_uefi; reboot"],
            retries=2,
            scripts_repo=origin,
            runner={"type": "local", "root": str(root)},
            buildcache_conn_id=CACHE_CONN,
        )
    run = run_dag(dag, logical_date=None)
    ti = run.get_task_instance("vms")
    assert ti.state == "failed" and ti.try_number == 1
    assert "invalid input: image format 'qemu_uefi; reboot' contains whitespace" in capfd.readouterr().out
    assert not root.exists()


def test_heartbeats_and_no_secret_in_the_logs(
    run_dag, connections, build_cache, seed_sdk, mini_origin, tmp_path, capfd
):
    origin = str(mini_origin.path)
    with DAG("e2e_quiet", schedule=None, start_date=START) as dag:
        build = _tag_task(origin, "main", "full", str(tmp_path / "tag-cache"), OTHER_NIGHT)
        SdkBootstrapOperator(
            task_id="sdk_bootstrap",
            build=build,
            seed_version=seed_sdk,
            scripts_repo=origin,
            runner={"type": "local", "root": str(tmp_path / "root")},
            buildcache_conn_id=CACHE_CONN,
            heartbeat_interval=2,
            env={"MINI_SLOW_STEP": "sdk_bootstrap:5"},
        )
    run = run_dag(dag, logical_date=None)
    assert run.get_task_instance("sdk_bootstrap").state == "success"
    out = capfd.readouterr().out
    assert "sdk_bootstrap still running, no output for 2 s (elapsed 0m0" in out
    key_lines = [
        line for line in connections["extra"]["private_key"].splitlines() if "PRIVATE KEY" not in line
    ]
    assert key_lines and not any(line in out for line in key_lines)


def test_dropped_ssh_connection_fails_the_attempt_cleanly_and_the_retry_succeeds(
    run_dag, connections, build_cache, released_sdk, mini_origin, tmp_path, capfd
):
    import os
    import signal
    import threading
    import time

    origin = str(mini_origin.path)
    root = tmp_path / "root"
    runner = {
        "type": "ssh",
        "ssh_conn_id": HOST_CONN,
        "root": str(root),
        "reconnect_timeout": 0,
        "poll_interval": 0.2,
    }
    with DAG("e2e_ssh_drop", schedule=None, start_date=START) as dag:
        build = _tag_task(origin, "flatcar-4593", "os", str(tmp_path / "tag-cache"), OTHER_NIGHT)
        PackagesTagOperator(
            task_id="packages_tag",
            build=build,
            scripts_repo=origin,
            runner=runner,
            buildcache_conn_id=CACHE_CONN,
            retries=1,
            retry_delay=dt.timedelta(seconds=0),
            env={"MINI_SLOW_STEP": "packages_tag:8"},
        )

    def cut_the_network():
        deadline = time.monotonic() + 120
        while not list(root.glob("jobs/*/1/pid")) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)
        # This session's build host sshd's connections only (never every "sshd: root" of the machine).
        sessions = build_cache.build_host.ssh_session_pids()
        cut.extend(sessions)
        for pid in sessions:
            os.kill(pid, signal.SIGKILL)

    cut: list[int] = []
    cutter = threading.Thread(target=cut_the_network)
    cutter.start()
    run = run_dag(dag, logical_date=None)
    cutter.join()

    ti = run.get_task_instance("packages_tag")
    out = capfd.readouterr().out
    assert cut, "no ssh session was cut"
    assert ti.state == "success" and ti.try_number == 2, out[-3000:]
    assert "lost the connection to the build host" in out
    assert "stopping an earlier attempt of this step (1" in out
    assert "mini-scripts: packages_tag" in out or "Reusing existing tag" in out
    assert not list(root.glob("jobs/*/*/pid"))  # both attempts' job directories are gone


def test_signing_key_from_a_connection_signs_artifacts_and_stays_secret(
    run_dag, connections, build_cache, seed_sdk, mini_origin, tmp_path, capfd, monkeypatch
):
    gnupg = tmp_path / "gnupg"
    gnupg.mkdir(mode=0o700)
    gpg = ["gpg", "--batch", "--homedir", str(gnupg)]
    subprocess.run(
        [
            *gpg,
            "--passphrase",
            "",
            "--quick-gen-key",
            "Flatcar Test <signer@example.org>",
            "ed25519",
            "sign",
            "never",
        ],
        check=True,
        capture_output=True,
    )
    secret = subprocess.run(
        [*gpg, "--armor", "--export-secret-keys"], check=True, capture_output=True, text=True
    ).stdout
    monkeypatch.setenv(
        "AIRFLOW_CONN_FLATCAR_SIGNING_TEST",
        json.dumps({"conn_type": "generic", "login": "signer@example.org", "password": secret}),
    )
    origin = str(mini_origin.path)
    root = Path(tempfile.mkdtemp(prefix="fa-", dir="/tmp"))  # short: gpg-agent's socket path must fit
    with DAG("e2e_signed", schedule=None, start_date=START) as dag:
        build = _tag_task(origin, "main", "full", str(tmp_path / "tag-cache"))
        SdkBootstrapOperator(
            task_id="sdk_bootstrap",
            build=build,
            seed_version=seed_sdk,
            scripts_repo=origin,
            runner={"type": "local", "root": str(root)},
            buildcache_conn_id=CACHE_CONN,
            signing_conn_id="flatcar_signing_test",
        )

    run = run_dag(dag, logical_date=None)

    assert run.get_task_instance("sdk_bootstrap").state == "success"
    ver = "4799.0.0+nightly-20260821-2100"
    tarball = build_cache.root / f"sdk/amd64/{ver}/flatcar-sdk-amd64-{ver}.tar.bz2"
    verified = subprocess.run(
        [*gpg, "--verify", f"{tarball}.sig", str(tarball)], capture_output=True, text=True
    )
    assert verified.returncode == 0, verified.stderr
    out = capfd.readouterr().out
    key_body = [line for line in secret.splitlines() if len(line) > 40]
    assert key_body and not any(line in out for line in key_body)
    record = run.get_task_instance("sdk_bootstrap").xcom_pull(task_ids="sdk_bootstrap")
    assert not any(line in json.dumps(record) for line in key_body)
    assert not list(root.glob("jobs/*/*/secrets"))  # the key file is gone with the job
    assert (
        subprocess.run(["pgrep", "-f", str(root)], capture_output=True).returncode == 1
    )  # no gpg-agent left
    shutil.rmtree(root)


def test_a_failed_step_names_its_cause_first(
    run_dag, build_cache, released_sdk, mini_origin, tmp_path, capfd
):
    """The scripts reach the cache by BUILDCACHE_SERVER (the connection's host); when that name does not
    resolve, curl says so among the step's output, and the task's error must say it in its first line."""
    from connections import cache_connection

    connection = cache_connection(build_cache)
    connection["host"] = "flatcar-cache.invalid"
    origin = str(mini_origin.path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_FLATCAR_BUILDCACHE_NO_DNS", json.dumps(connection))
        with DAG("e2e_failure_cause", schedule=None, start_date=START) as dag:
            build = _tag_task(origin, "flatcar-4593", "os", str(tmp_path / "tag-cache"))
            PackagesOperator(
                task_id="packages",
                build=build,
                arch="amd64",
                scripts_repo=origin,
                runner={"type": "local", "root": str(tmp_path / "root")},
                buildcache_conn_id="flatcar_buildcache_no_dns",
                # curl retries each read for 60 s, as the scripts do: minutes of a name that never resolves
                env={"MINI_CURL_RETRY_MAX_TIME": "3"},
            )
        run = run_dag(dag, logical_date=None)

    ti = run.get_task_instance("packages")
    assert ti.state == "failed"
    failure = ti.xcom_pull(task_ids="packages", key="failure")
    assert failure["kind"] == "unreachable", failure
    assert failure["summary"].startswith("cannot reach flatcar-cache.invalid: its name does not resolve")
    assert "Could not resolve host: flatcar-cache.invalid" in failure["line"]
    out = capfd.readouterr().out
    assert "packages failed: cannot reach flatcar-cache.invalid: its name does not resolve" in out
