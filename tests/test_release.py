"""Secure Boot signing and the release DAG, end to end: one OS build of the release branch flatcar-4593 with
amd64 signed (miniature scripts, real dockerd, the real ssh/https build cache, ``dag.test()``), then
``flatcar_release`` runs against it: every refusal, a dry run, a real (miniature) release whose first run
fails in release_build and a new run with the same params completes (one record); and a grep of
what those runs left (task logs as a worker writes them, XCom, rendered fields, manifests, index) for the
Secure Boot key and the cloud credentials."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import subprocess

import pytest
import yaml
from connections import CACHE_CONN
from test_secrets_e2e import _rendered_fields, _worker_log_processors

from flatcar_airflow.buildindex.entries import index_path

BRANCH = "flatcar-4593"
DAG_ID = "flatcar_os_flatcar_4593"
NIGHT = dt.datetime(2026, 8, 21, 21, 0, tzinfo=dt.UTC)
TAG = "stable-4593.2.4-nightly-20260821-2100"
VERSION = "4593.2.4+nightly-20260821-2100"
MANIFEST = "flatcar-airflow-manifest.json"
SBSIGN_CONN = "flatcar_sbsign_test"
AWS_CONN = "flatcar_release_aws_test"
GCE_CONN = "flatcar_release_gce_test"
#: Cloud credentials as the real release.sh takes them: base64 of the files plume reads.
AWS_SECRET = "aws-secret-9c1e5b7a3f2d4e6b8a0c"  # noqa: S105 - a test secret
GCE_SECRET = "gce-secret-2718281828459045235"  # noqa: S105 - a test secret
AWS = {
    "AWS_CREDENTIALS": f"[default]\naws_access_key_id = AKIATEST\naws_secret_access_key = {AWS_SECRET}\n",
    "AWS_MARKETPLACE_CREDENTIALS": f"[default]\naws_secret_access_key = {AWS_SECRET}-market\n",
    "AWS_MARKETPLACE_ARN": "arn:aws:iam::123456789012:role/test-marketplace",
    "AWS_CLOUDFORMATION_CREDENTIALS": f"[default]\naws_secret_access_key = {AWS_SECRET}-cf\n",
}
GCE = {
    "GCP_JSON_KEY": json.dumps({"type": "service_account", "private_key": GCE_SECRET}),
    "GOOGLE_RELEASE_CREDENTIALS": json.dumps({"private_key": GCE_SECRET + "-release"}),
}


def _b64(values: dict[str, str]) -> dict[str, str]:
    return {name: base64.b64encode(value.encode()).decode() for name, value in values.items()}


@pytest.fixture
def cache(build_cache):
    build_cache.clear()
    yield build_cache
    build_cache.clear()


@pytest.fixture
def sbsign_key(tmp_path) -> tuple[str, str]:
    """A Secure Boot key and certificate (PEM), made with openssl like a test signing key."""
    key, cert = tmp_path / "db.key", tmp_path / "db.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=mini DB key/", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return key.read_text(), cert.read_text()


@pytest.fixture
def release_connections(connections, sbsign_key, monkeypatch):
    key, cert = sbsign_key
    for conn_id, data in (
        (SBSIGN_CONN, {"conn_type": "generic", "password": key, "extra": {"cert": cert}}),
        (AWS_CONN, {"conn_type": "generic", "extra": _b64(AWS)}),
        (GCE_CONN, {"conn_type": "generic", "extra": _b64(GCE)}),
    ):
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(data))
    return sbsign_key


def _config(origin, tmp_path):
    from flatcar_airflow.config import parse_config

    data = {
        "scripts_repo": str(origin.path),
        "buildcache_conn_id": CACHE_CONN,
        "runner": {"type": "local", "root": str(tmp_path / "build-root")},
        "tagging_cache": str(tmp_path / "tag-cache"),
        "sbsign_conn_id": SBSIGN_CONN,
        "arches": {
            "amd64": {"formats": ["qemu_uefi"], "test_vendors": ["qemu_uefi"], "sbsign": True},
            "arm64": {"formats": ["qemu_uefi"], "test_vendors": ["qemu_uefi"]},
        },
        "full": {"enabled": True, "branch": "main"},
        "os": {"branches": [BRANCH], "arches": ["amd64", "arm64"]},
        "image_changes": None,
        "heartbeat_interval": 30,
        "retries": 0,
        "preflight": {"enabled": False},
        "release": {"offers": {"aws": AWS_CONN, "gce": GCE_CONN}},
        # The first release_build fails (before it publishes anything); a new run then completes.
        "step_env": {"MINI_FAIL_ONCE": "release_build", "MINI_STATE_DIR": str(tmp_path / "mini-state")},
    }
    return parse_config(yaml.safe_dump(data))


def _check_signature(path, key: str, cert: str) -> None:
    """The miniature's Secure Boot signature (./sbsign_image): the last line, made with this key."""
    *body, last = path.read_bytes().splitlines(keepends=True)
    payload = b"".join(body)
    fields = dict(item.split("=", 1) for item in last.decode().split()[1:])
    assert last.startswith(b"MINI-SBSIGN "), last
    assert fields["sha256"] == hashlib.sha256(payload).hexdigest()
    assert fields["cert"] == hashlib.sha256(cert.encode()).hexdigest()
    assert fields["mac"] == hashlib.sha256(key.encode() + payload).hexdigest()


def _signed_kernel_in(disk) -> bytes | None:
    """The signed kernel inside the generic image inside a miniature vendor disk (tars in a tar)."""
    import tarfile

    with tarfile.open(disk) as outer:
        for member in outer.getmembers():
            if not member.isfile():
                continue
            try:
                with tarfile.open(fileobj=outer.extractfile(member)) as inner:
                    return inner.extractfile("./boot/flatcar/vmlinuz-a").read()
            except (tarfile.TarError, KeyError):
                continue
    return None


def _states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def _copy_build(hook, cache, manifest: dict, tag: str, **changes) -> None:
    """Another build of the index (a manifest copy in the real cache, put into its branch's index as the
    summary task does), for the refusals that need a build that is not the one built here."""
    from flatcar_airflow.buildindex.store import update_index

    version = tag.split("-", 1)[1].replace("-nightly", "+nightly")
    text = json.dumps(manifest).replace(VERSION, version).replace(TAG, tag)
    data = {**json.loads(text), **changes}
    path = f"images/amd64/{version}/{MANIFEST}"
    hook.upload(path, json.dumps(data).encode())
    assert update_index(hook, data, [path])["updated"]


def test_a_signed_build_is_released_and_every_refusal_names_its_reason(
    run_dag, mini_origin, cache, released_sdk, release_connections, tmp_path, capfd, caplog
):
    from flatcar_airflow.hooks.buildcache import BuildCacheHook
    from flatcar_airflow.pipelines import build_dags
    from flatcar_airflow.release import release_dag

    key, cert = release_connections
    config = _config(mini_origin, tmp_path)
    hook = BuildCacheHook(CACHE_CONN)
    logs: list[str] = []

    def run(dag, **kwargs):
        """A dag.test() run logged as a worker logs (with the masker); its output kept for the grep."""
        with _worker_log_processors():
            result = run_dag(dag, logical_date=kwargs.pop("logical_date", None), **kwargs)
        captured = capfd.readouterr()
        # the task log: the operators' lines, and (through logging) the module loggers' of @task code
        logs.append(captured.out + captured.err + caplog.text)
        caplog.clear()
        return result

    # 1. The nightly of the release branch, amd64 signed for Secure Boot between image and vms.
    build_dag = build_dags(config)[DAG_ID]
    # Every step also reads the tag task's record (its ``build`` argument): the order is the rest.
    assert build_dag.get_task("amd64.sbsign_image").upstream_task_ids - {"tag"} == {"amd64.image"}
    assert build_dag.get_task("amd64.vms").upstream_task_ids - {"tag"} == {"amd64.sbsign_image"}
    assert "arm64.sbsign_image" not in build_dag.task_ids
    build = run(build_dag, logical_date=NIGHT)
    states = _states(build)
    assert states["summary"] == "success", states
    images = f"images/amd64/{VERSION}"
    for name in ("flatcar_production_image.vmlinuz", "flatcar_production_image.grub"):
        _check_signature(cache.path(f"{images}/{name}"), key, cert)
        assert cache.head(f"{images}/{name}.DIGESTS") == 200
    image = cache.path(f"{images}/flatcar_production_image.bin.bz2")
    signed = subprocess.run(
        ["tar", "-xOjf", str(image), "./boot/flatcar/vmlinuz-a"], check=True, capture_output=True
    ).stdout
    assert signed == cache.path(f"{images}/flatcar_production_image.vmlinuz").read_bytes()
    assert not cache.path(f"images/arm64/{VERSION}/flatcar_production_image.grub").exists()
    record = build.get_task_instance("amd64.sbsign_image").xcom_pull(task_ids="amd64.sbsign_image")
    assert record["step"] == "sbsign_image" and record["reused"] is False
    assert {(a["kind"], a["path"].rpartition("/")[2]) for a in record["artifacts"]} == {
        ("generic-image", "flatcar_production_image.bin.bz2"),
        ("secure-boot", "flatcar_production_image.vmlinuz"),
        ("secure-boot", "flatcar_production_image.grub"),
    }
    manifest = json.loads(cache.fetch(f"{images}/{MANIFEST}"))
    assert manifest["arches"]["amd64"]["sbsign_image"]["state"] == "success"
    assert manifest["arches"]["amd64"]["sbsign_image"]["artifacts"] == record["artifacts"]
    # vms made the vendor image from the signed image (a miniature disk is a tar holding the generic image)
    assert _signed_kernel_in(cache.path(f"{images}/flatcar_production_qemu_uefi_image.img.bz2")) == signed

    # 2. The release DAG refuses, before any side effect and naming why.
    dag = release_dag(config)
    assert dag.max_active_runs == 1 and dag.get_task("release").max_active_tis_per_dag == 1
    _copy_build(hook, cache, manifest, "main-4799.0.0-nightly-20260821-2100", branch="main", ref="main")
    failed_manifest = json.loads(json.dumps(manifest))
    failed_manifest["tests"]["amd64"]["qemu_uefi"].update(failed=1, failures=["cl.basic"])
    _copy_build(hook, cache, failed_manifest, "stable-4593.2.4-nightly-20260822-2100")
    _copy_build(hook, cache, manifest, "stable-4593.2.4-nightly-20260823-2100")  # its artifacts: not there
    refusals = {
        "stable-4593.2.9": "does not exist: no build of it in the builds index of the release branches "
        f"({BRANCH})",
        "main-4799.0.0-nightly-20260821-2100": f"is a build of main, not of a release branch ({BRANCH})",
        "stable-4593.2.4-nightly-20260822-2100": ": its tests did not pass: "
        "amd64 qemu_uefi: 1 failed (cl.basic)",
        "stable-4593.2.4-nightly-20260823-2100": ": its artifacts are missing from the build cache: "
        "boards/amd64-usr/4593.2.4+nightly-20260823-2100/",
    }
    for version, reason in refusals.items():
        refused = run_dag(dag, logical_date=None, run_conf={"version": version, "dry_run": False})
        states = _states(refused)
        assert states == {"check": "failed", "release": "upstream_failed", "record": "upstream_failed"}, (
            version
        )
        out = capfd.readouterr().out
        reason = f"release refused: {version}{'' if reason.startswith(':') else ' '}{reason}"
        assert reason in out, (reason, out[-2000:])
    assert not list(cache.root.glob("images/*/*/flatcar_production_ami_*")), "a refused release published"

    # 3. A dry run: checked, nothing published, nothing recorded.
    # (a fresh DAG object: dag.test() in one process keeps an earlier run's conf in the DAG's params,
    # which a scheduler's task, parsing the file anew, never sees)
    dry = run(release_dag(config), run_conf={"version": TAG})
    assert _states(dry) == {"check": "success", "release": "skipped", "record": "skipped"}, logs[-1][-3000:]
    out = logs[-1]
    assert f"Dry run: {TAG} (a build of {BRANCH}, run {build.run_id}) would be published to aws, gce" in out
    assert not list(cache.root.glob("images/*/*/flatcar_production_ami_*"))
    plan = dry.get_task_instance("check").xcom_pull(task_ids="check")
    assert (plan["tag"], plan["branch"], plan["offers"], plan["dry_run"]) == (
        TAG,
        BRANCH,
        ["aws", "gce"],
        True,
    )
    assert "releases" not in json.loads(cache.fetch(f"{images}/{MANIFEST}"))

    # 4. The release, for real (the miniature's plume). Its first attempt fails: the cause is named,
    # nothing is recorded. A new run with the same params (as docs/release.md says) runs release_build
    # again and completes: AMI lists in the cache, one record in the manifests and the index entry.
    failed = run(release_dag(config), run_conf={"version": TAG, "offers": ["aws"], "dry_run": False})
    out = logs[-1]
    assert _states(failed) == {"check": "success", "release": "failed", "record": "upstream_failed"}, out[
        -3000:
    ]
    assert "release failed" in out and "failing release_build as asked" in out, out[-3000:]
    assert "releases" not in json.loads(cache.fetch(f"{images}/{MANIFEST}"))
    real = run(dag, run_conf={"version": TAG, "offers": ["aws"], "dry_run": False})
    out = logs[-1]
    assert _states(real) == {"check": "success", "release": "success", "record": "success"}, out[-3000:]
    assert "plume: published ami-" in out and "plume: no credentials for gce" in out
    for arch in ("amd64", "arm64"):
        amis = json.loads(cache.fetch(f"images/{arch}/{VERSION}/flatcar_production_ami_all.json"))
        assert [ami["name"] for ami in amis["amis"]] == ["us-east-1", "eu-central-1"]
        assert cache.head(f"images/{arch}/{VERSION}/flatcar_production_ami_hvm.txt.DIGESTS") == 200
        released = json.loads(cache.fetch(f"images/{arch}/{VERSION}/{MANIFEST}"))["releases"]
        assert [(r["run_id"], r["offers"]) for r in released] == [(real.run_id, ["aws"])]
        assert {a["path"] for a in released[0]["artifacts"]} >= {
            f"images/{arch}/{VERSION}/flatcar_production_ami_all.json"
        }
    entry = next(e for e in json.loads(cache.fetch(index_path(BRANCH)))["builds"] if e["version_tag"] == TAG)
    assert entry["released"] == {"offers": ["aws"], "at": released[0]["published_at"], "run_id": real.run_id}
    assert entry["state"] == "success" and entry["run_id"] == build.run_id

    # 5. The Secure Boot key and the cloud credentials are nowhere in what the runs left.
    secrets = [line for line in key.splitlines() if len(line) > 20 and not line.startswith("-----")]
    secrets += [AWS_SECRET, GCE_SECRET, *_b64(AWS).values(), *_b64(GCE).values()]
    kept = list(logs)
    for finished in (build, dry, failed, real):
        for ti in finished.get_task_instances():
            kept.append(json.dumps(ti.xcom_pull(task_ids=ti.task_id), default=str))
            kept.append(json.dumps(_rendered_fields(ti), default=str))
    kept += [path.read_text(errors="replace") for path in cache.root.rglob("*.json")]
    leaked = [secret[:12] for secret in secrets if any(secret in text for text in kept)]
    assert not leaked, f"in a task log, XCom, rendered field, manifest or index: {leaked}"
    # ... nor left on the build host (the job's secret files, job.env and sdk_container/.env are gone).
    left = [
        path
        for path in (tmp_path / "build-root").rglob("*")
        if path.is_file() and any(secret.encode() in path.read_bytes() for secret in secrets)
    ]
    assert not left, left
