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
    for bad in ("../etc/passwd", "images/x.json\n"):
        with pytest.raises(ValueError, match="must be relative"):
            hook.upload(bad, b"")


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


def test_every_line_of_the_private_key_is_masked(hook, build_cache):
    """Airflow masks an extra named ``private_key`` as a whole by itself; only the hook masks each line,
    which a tool may print alone (an ssh-add or rsync error quoting the key file)."""
    from airflow.sdk.log import redact  # the masker of the task logs

    _ = hook.settings
    lines = [line for line in build_cache.key_file.read_text().splitlines() if not line.startswith("-----")]
    assert len(lines) >= 2
    for line in lines:
        assert line not in str(redact(f"oops: {line}"))


_INJECTED = "bincache\nHost *\n    ProxyCommand touch /tmp/flatcar-airflow-canary"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"login": _INJECTED}, "login 'bincache\\nHost"),
        ({"login": "-oProxyCommand=x"}, "is not a user name"),
        ({"host": "cache.example\nHost *"}, "is not a host name"),
        ({"host": "-oProxyCommand=touch"}, "is not a host name"),
        ({"host": "cache example"}, "is not a host name"),
        ({"extra": {"path_prefix": "/srv/cache\nBUILDCACHE_USER=x"}}, "extra 'path_prefix'"),
        ({"extra": {"path_prefix": "relative/dir"}}, "extra 'path_prefix'"),
        ({"extra": {"path_prefix": "/srv/../etc"}}, "extra 'path_prefix'"),
        ({"extra": {"path_prefix": "/srv/$(id)"}}, "extra 'path_prefix'"),
        ({"extra": {"path_prefix": "/srv", "key_file": "/home/x/id\n"}}, "extra 'key_file'"),
        ({"extra": {"path_prefix": "/srv", "http_url": "https://u:s3cret@cache.example"}}, "credentials"),
        ({"extra": {"path_prefix": "/srv", "http_url": "file:///etc/passwd"}}, "extra 'http_url'"),
        ({"extra": {"path_prefix": "/srv", "http_url": "https://cache.example/\n"}}, "extra 'http_url'"),
        ({"extra": {"path_prefix": "/srv", "http_url": "https://cache.example/?a=b"}}, "extra 'http_url'"),
        ({"extra": {"path_prefix": "/srv", "host_key": "ssh-ed25519 AAAA\n[x]:1 ssh-rsa B"}}, "'host_key'"),
        ({"extra": {"path_prefix": "/srv", "ca_bundle": "/etc/passwd"}}, "is not under /etc/ssl/certs"),
        ({"extra": {"path_prefix": "/srv", "ca_bundle": "/etc/ssl/certs/../../shadow"}}, "is not under"),
        (
            {"extra": {"path_prefix": "/srv", "ca_bundle": "-----BEGIN PRIVATE KEY-----\nAAAA\n"}},
            "nothing else",
        ),
    ],
)
def test_connection_fields_that_reach_ssh_git_or_files_are_checked(build_cache, monkeypatch, change, message):
    """A field that reaches the job's line-based ssh config, ci-config.env, ssh, rsync or curl is refused
    before it is used (the login above once added a ProxyCommand to the job's ssh config)."""
    monkeypatch.setenv("AIRFLOW_CONN_CACHE_BAD", json.dumps({**cache_connection(build_cache), **change}))
    with pytest.raises(ValueError, match=re.escape(message)) as raised:
        BuildCacheHook("cache_bad").settings  # noqa: B018 - reading the settings is the check
    assert "s3cret" not in str(raised.value)


def test_a_ca_bundle_is_certificates_only_from_text_or_a_system_directory(build_cache, monkeypatch, tmp_path):
    """The bundle is shipped to the build host: a path elsewhere (or a symlink out of the CA
    directories) could send any worker file there; a system bundle path is fine."""
    system = "/etc/ssl/certs/ca-certificates.crt"
    monkeypatch.setenv("AIRFLOW_CONN_CACHE_CA", json.dumps(cache_connection(build_cache, ca_bundle=system)))
    assert BuildCacheHook("cache_ca").settings.ca_pem().startswith(b"-----BEGIN CERTIFICATE-----")

    mixed = build_cache.ca_file.read_text() + build_cache.key_file.read_text()
    monkeypatch.setenv("AIRFLOW_CONN_CACHE_CA", json.dumps(cache_connection(build_cache, ca_bundle=mixed)))
    with pytest.raises(ValueError, match=r"PEM certificates .* and nothing else"):
        BuildCacheHook("cache_ca").settings  # noqa: B018 - reading the settings is the check

    link = tmp_path / "bundle.pem"
    link.symlink_to(build_cache.ca_file)
    monkeypatch.setenv(
        "AIRFLOW_CONN_CACHE_CA", json.dumps(cache_connection(build_cache, ca_bundle=str(link)))
    )
    with pytest.raises(ValueError, match="is not under /etc/ssl/certs"):
        BuildCacheHook("cache_ca").settings  # noqa: B018 - reading the settings is the check
