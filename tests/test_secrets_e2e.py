"""Secrets through a real step: a step that prints every secret it was given, and none of it shows.

The other end-to-end secret checks grep for key material that nothing prints, so they cannot fail. Here a
``packages_tag`` step of a probe scripts repository prints the secrets connection's values, the signing
key file and the build cache's private key file (each line on its own, as ``cat`` would), under
``dag.test()`` with the local runner. The task log (captured output), XCom and the rendered template
fields must hold none of it, while the lines around each secret do show (so the step really printed).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os

import pytest
from airflow.sdk import DAG
from connections import CACHE_CONN
from gitrepos import commit_file, git, make_origins

from flatcar_airflow.operators import PackagesTagOperator

TAG = "main-4799.0.0-nightly-20260821-2100"
VERSION = "4799.0.0+nightly-20260821-2100"
BUILD = {"tag": TAG, "versionfile": {"FLATCAR_SDK_VERSION": VERSION, "FLATCAR_VERSION": VERSION}}
#: Prints what a careless step might: its secret variables, the signing key, the cache key file.
LEAKY = r"""# >>> This file is supposed to be SOURCED from the repository ROOT. <<<
function packages_tag() {
    echo "leak-token-begin ${CLOUD_TOKEN} leak-token-end"
    echo "leak-other=${OTHER_SECRET}"
    echo "leak-signer=${SIGNER}"
    echo "leak-signing-key-begin"; cat "${SIGNING_KEY}"; echo "leak-signing-key-end"
    echo "leak-cache-key-begin"; cat ../../jobs/*/*/ssh/id; echo "leak-cache-key-end"
}
"""
TOKEN = "tok-5f1c9e0a7b3d4e2f8a6b"  # noqa: S105 - a test secret
OTHER = "other-secret-31415926535"
#: Not a real key: a step cannot tell, and the masker must not care either.
SIGNING = (
    "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n"
    "lFgEZmFrZRYJKwYBBAHaRw8BAQdAk3ZpcnR1YWxseSBzZWNyZXQgc2lnbmluZyBr\n"
    "ZXkgbWF0ZXJpYWwgZm9yIHRoZSB0ZXN0cyBvZiBmbGF0Y2FyLWFpcmZsb3cgAAAA\n"
    "=abcd\n-----END PGP PRIVATE KEY BLOCK-----\n"
)


@pytest.fixture
def leaky_origin(tmp_path) -> str:
    origins = make_origins(tmp_path / "origins")
    commit_file(origins.work, "ci-automation/packages-tag.sh", LEAKY, "a step that prints its secrets")
    git("tag", TAG, cwd=origins.work)
    git("push", "-q", "origin", "main", TAG, cwd=origins.work)
    return origins.url


def test_secrets_a_step_prints_are_masked_everywhere(
    run_dag, connections, leaky_origin, tmp_path, capfd, monkeypatch
):
    monkeypatch.setenv(
        "AIRFLOW_CONN_FLATCAR_SECRETS_TEST",
        json.dumps({"conn_type": "generic", "extra": {"CLOUD_TOKEN": TOKEN, "OTHER_SECRET": OTHER}}),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_FLATCAR_SIGNING_LEAK_TEST",
        json.dumps({"conn_type": "generic", "login": "signer@example.org", "password": SIGNING}),
    )
    with DAG("secrets_leaky_step", schedule=None, start_date=dt.datetime(2026, 8, 1, tzinfo=dt.UTC)) as dag:
        PackagesTagOperator(
            task_id="packages_tag",
            build=BUILD,
            scripts_repo=leaky_origin,
            runner={"type": "local", "root": str(tmp_path / "root")},
            buildcache_conn_id=CACHE_CONN,
            secrets_conn_id="flatcar_secrets_test",
            signing_conn_id="flatcar_signing_leak_test",
        )

    with _worker_log_processors():
        run = run_dag(dag, logical_date=None)

    out = capfd.readouterr().out
    ti = run.get_task_instance("packages_tag")
    assert ti.state == "success", out[-3000:]
    # The step printed: the lines around each secret are there.
    for marker in ("leak-token-begin", "leak-token-end", "leak-signing-key-end", "leak-cache-key-end"):
        assert marker in out, marker
    cache_key = connections["extra"]["private_key"]
    secrets = [TOKEN, OTHER]
    secrets += [line for line in SIGNING.splitlines() if len(line) > 20 and not line.startswith("-----")]
    secrets += [line for line in cache_key.splitlines() if len(line) > 20 and not line.startswith("-----")]
    assert len(secrets) >= 5
    record = json.dumps(ti.xcom_pull(task_ids="packages_tag"), default=str)
    rendered = json.dumps(_rendered_fields(ti), default=str)
    leaked = [secret[:12] for secret in secrets if secret in out or secret in record or secret in rendered]
    assert not leaked, f"in the task log, XCom or rendered fields: {leaked}"


@contextlib.contextmanager
def _worker_log_processors():
    """Log through the processors a task's logging has on a worker, the masker included.

    ``dag.test()`` under pytest logs without Airflow's masking processor, so a grep of its output finds
    every secret a step prints, masked or not; a worker's task log is written through
    :func:`airflow.sdk.log.logging_processors`, which redacts.
    """
    import structlog
    from airflow.sdk.log import logging_processors

    saved = structlog.get_config()
    structlog.configure(processors=list(logging_processors(json_output=False, colors=False)))
    try:
        yield
    finally:
        structlog.configure(**saved)


def _rendered_fields(ti) -> dict:
    """The task's rendered template fields as the UI shows them (stored by Airflow after rendering)."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields

    return RenderedTaskInstanceFields.get_templated_fields(ti) or {}


# -- a whole pipeline: the manifest, the builds index and the builds page -------------------------------

BRANCH = "flatcar-4593"
DAG_ID = "flatcar_os_flatcar_4593"
NIGHT = dt.datetime(2026, 8, 21, 21, 0, tzinfo=dt.UTC)
#: A packages step that fails after printing every secret it was given, its last error line included:
#: the lines a failure's cause is read from (flatcar_airflow/failures.py), which reach XCom, the manifest,
#: the builds index and the builds page.
LEAKY_PACKAGES = r"""# >>> This file is supposed to be SOURCED from the repository ROOT. <<<
function packages_build() {
    echo "leak-begin ${CLOUD_TOKEN} ${OTHER_SECRET}"
    echo "leak-signing-key-begin"; cat "${SIGNING_KEY}"; echo "leak-signing-key-end"
    echo "ERROR: registry login refused for ${CLOUD_TOKEN}: permission denied" >&2
    echo "rsync: connection unexpectedly closed for ${OTHER_SECRET}" >&2
    return 1
}
"""


def test_a_pipeline_whose_step_fails_printing_secrets_leaks_them_nowhere(
    run_dag, connections, mini_origin, build_cache, released_sdk, tmp_path, capfd, monkeypatch
):
    import yaml

    from flatcar_airflow.buildindex.entries import index_path
    from flatcar_airflow.config import parse_config
    from flatcar_airflow.pipelines import build_dags

    build_cache.clear()
    monkeypatch.setenv(
        "AIRFLOW_CONN_FLATCAR_SECRETS_TEST",
        json.dumps({"conn_type": "generic", "extra": {"CLOUD_TOKEN": TOKEN, "OTHER_SECRET": OTHER}}),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_FLATCAR_SIGNING_LEAK_TEST",
        json.dumps({"conn_type": "generic", "login": "signer@example.org", "password": SIGNING}),
    )
    mini_origin.push_change(BRANCH, "ci-automation/packages.sh", LEAKY_PACKAGES, "packages that leak")
    config = {
        "scripts_repo": mini_origin.url,
        "buildcache_conn_id": CACHE_CONN,
        "secrets_conn_id": "flatcar_secrets_test",
        "signing_conn_id": "flatcar_signing_leak_test",
        "runner": {"type": "local", "root": str(tmp_path / "build-root")},
        "tagging_cache": str(tmp_path / "tag-cache"),
        "arches": {"amd64": {"formats": ["qemu_uefi"], "test_vendors": ["qemu_uefi"]}},
        "full": {"enabled": False, "arches": ["amd64"]},
        "os": {"branches": [BRANCH], "arches": ["amd64"]},
        "image_changes": None,
        "retries": 0,
        "preflight": {"min_free_gb": 1, "network": "off"},
        "web": {"cache_seconds": 0},
    }
    config_file = tmp_path / "flatcar.yaml"
    config_file.write_text(yaml.safe_dump(config))
    dag = build_dags(parse_config(config_file.read_text()))[DAG_ID]

    with _worker_log_processors():
        run = run_dag(dag, logical_date=NIGHT)
    out = capfd.readouterr().out
    packages = run.get_task_instance("amd64.packages")
    assert packages.state == "failed", out[-3000:]
    assert "leak-begin" in out and "leak-signing-key-end" in out  # the step really printed
    # The cause is still named, with the secret replaced.
    failure = packages.xcom_pull(task_ids="amd64.packages", key="failure")
    assert failure and "registry login refused for ***" in json.dumps(failure), failure

    places: dict[str, str] = {"task log": out}
    for ti in run.get_task_instances():
        for key in ("return_value", "failure", "tests", "cache_links"):
            value = ti.xcom_pull(task_ids=ti.task_id, key=key)
            if value is not None:
                places[f"XCom {ti.task_id}/{key}"] = json.dumps(value, default=str)
        places[f"rendered fields of {ti.task_id}"] = json.dumps(_rendered_fields(ti), default=str)
    index = json.loads(build_cache.fetch(index_path(BRANCH)))
    (entry,) = index["builds"]
    places["builds index"] = json.dumps(index)
    for manifest in entry["manifests"]:
        places[manifest] = build_cache.fetch(manifest).decode()
    assert "registry login refused" in places["builds index"]  # the cause is there, masked
    places.update(_builds_pages(config_file, entry["version_tag"], tmp_path))

    secrets = [TOKEN, OTHER]
    secrets += [line for line in SIGNING.splitlines() if len(line) > 20 and not line.startswith("-----")]
    cache_key = connections["extra"]["private_key"]
    secrets += [line for line in cache_key.splitlines() if len(line) > 20 and not line.startswith("-----")]
    leaked = {where: [s[:12] for s in secrets if s in text] for where, text in places.items()}
    assert not {where: found for where, found in leaked.items() if found}, "secrets found"
    build_cache.clear()


def _builds_pages(config_file, tag: str, tmp_path) -> dict[str, str]:
    """The builds page's list, the build's page and the JSON API, as a logged-in user reads them."""
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from fastapi.testclient import TestClient

    environment = {
        "FLATCAR_AIRFLOW_CONFIG": str(config_file),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "viewer:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp_path / "passwords.json"),
    }
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    pages = {}
    try:
        purge_cached_app()
        with TestClient(create_app(), base_url="http://airflow.test") as client:
            password = json.loads((tmp_path / "passwords.json").read_text())["viewer"]
            token = client.post("/auth/token", json={"username": "viewer", "password": password})
            headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            for path in (
                "/flatcar/",
                f"/flatcar/builds/{tag}",
                "/flatcar/api/builds",
                f"/flatcar/api/builds/{tag}",
            ):
                answer = client.get(path, headers=headers)
                assert answer.status_code == 200, (path, answer.text[:500])
                pages[f"page {path}"] = answer.text
        assert tag in pages[f"page /flatcar/builds/{tag}"]
        return pages
    finally:
        purge_cached_app()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
