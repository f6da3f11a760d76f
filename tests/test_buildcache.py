"""The build cache hook against the real loopback cache (sshd + rsync writes, HTTPS reads)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from connections import cache_connection

from flatcar_airflow.hooks.buildcache import BuildCacheHook


@pytest.fixture
def hook(build_cache, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CACHE_UNDER_TEST", json.dumps(cache_connection(build_cache)))
    return BuildCacheHook("cache_under_test")


def test_batched_checks_report_existence_and_size(hook, build_cache):
    (build_cache.root / "images/amd64/1.2.3").mkdir(parents=True, exist_ok=True)
    (build_cache.root / "images/amd64/1.2.3/a.bin").write_bytes(b"x" * 42)
    paths = ["images/amd64/1.2.3/a.bin"] + [f"images/amd64/1.2.3/missing-{i}" for i in range(40)]

    found = hook.check(paths)

    assert found["images/amd64/1.2.3/a.bin"].exists and found["images/amd64/1.2.3/a.bin"].size == 42
    assert not any(found[p].exists for p in paths[1:])
    assert found["images/amd64/1.2.3/a.bin"].url == f"{build_cache.https_url}/images/amd64/1.2.3/a.bin"


def test_upload_writes_through_ssh_and_reads_back_over_https(hook, build_cache):
    url = hook.upload("images/amd64/9.9.9+x/flatcar-airflow-manifest.json", b'{"ok": true}\n')
    assert url == f"{build_cache.https_url}/images/amd64/9.9.9+x/flatcar-airflow-manifest.json"
    assert hook.read_text("images/amd64/9.9.9+x/flatcar-airflow-manifest.json") == '{"ok": true}\n'
    assert not list((build_cache.root / "images/amd64/9.9.9+x").glob("*.tmp-*"))
    with pytest.raises(ValueError, match="must be relative"):
        hook.upload("../etc/passwd", b"")


def test_upload_refuses_an_unknown_host_key(build_cache, monkeypatch, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    wrong = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    monkeypatch.setenv(
        "AIRFLOW_CONN_CACHE_WRONG_KEY", json.dumps(cache_connection(build_cache, host_key=wrong))
    )
    with pytest.raises(RuntimeError, match=r"mkdir -p failed \(255\): Host key verification failed"):
        BuildCacheHook("cache_wrong_key").upload("x/y.json", b"{}")
    assert not build_cache.path("x").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"host": ""}, "host (the cache server) is empty"),
        ({"login": ""}, "login (the ssh user) is empty"),
        ({"extra": {}}, "extra 'path_prefix'"),
    ],
)
def test_a_bad_connection_names_the_problem(build_cache, monkeypatch, change, message):
    monkeypatch.setenv("AIRFLOW_CONN_CACHE_BAD", json.dumps({**cache_connection(build_cache), **change}))
    with pytest.raises(ValueError, match=re.escape(message)):
        BuildCacheHook("cache_bad").settings  # noqa: B018 - reading the settings is the check


def test_the_private_key_is_masked(hook, build_cache):
    from airflow.sdk.log import redact  # the masker of the task logs

    key = build_cache.key_file.read_text()
    _ = hook.settings
    line = key.splitlines()[1]
    assert line not in str(redact(f"oops: {key}"))
