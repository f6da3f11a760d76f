"""Airflow connections to the test infrastructure (environment variables, as a deployment may set them)."""

from __future__ import annotations

import json

import pytest

CACHE_CONN = "flatcar_buildcache_test"
HOST_CONN = "flatcar_build_host_test"


def cache_connection(build_cache, **extra) -> dict:
    """A ``flatcar_buildcache`` connection to the loopback build cache (extra keys override)."""
    return {
        "conn_type": "flatcar_buildcache",
        "host": build_cache.server,
        "port": build_cache.ssh_port,
        "login": build_cache.user,
        "extra": {
            "path_prefix": str(build_cache.root),
            "private_key": build_cache.key_file.read_text(),
            "http_url": build_cache.https_url,
            "ca_bundle": build_cache.ca_file.read_text(),
            "host_key": build_cache.host_key,
            **extra,
        },
    }


def host_connection(build_cache) -> dict:
    """An ``ssh`` connection to this machine as a build host (the session's build host sshd)."""
    host = build_cache.build_host
    return {
        "conn_type": "ssh",
        "host": host.server,
        "port": host.port,
        "login": host.user,
        "extra": {"key_file": str(host.key_file), "host_key": host.host_key},
    }


@pytest.fixture
def connections(build_cache, monkeypatch):
    cache = cache_connection(build_cache)
    monkeypatch.setenv(f"AIRFLOW_CONN_{CACHE_CONN.upper()}", json.dumps(cache))
    monkeypatch.setenv(f"AIRFLOW_CONN_{HOST_CONN.upper()}", json.dumps(host_connection(build_cache)))
    return cache
