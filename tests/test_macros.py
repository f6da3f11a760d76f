"""The template macros (flatcar_airflow/macros.py) as DAG authors use them: ``{{ macros.flatcar.… }}``
rendered by Airflow's own task runner under ``dag.test()`` (the plugin registers them), and their values
against the project's version functions."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import yaml

from flatcar_airflow.macros import MACROS, docker_version, nightly_version, version_number
from flatcar_airflow.plugin import FlatcarPlugin

NIGHT = dt.datetime(2026, 8, 21, 21, 0, tzinfo=dt.UTC)
CONN = "flatcar_buildcache_macros"


def test_the_plugin_registers_the_macros():
    assert FlatcarPlugin.macros == MACROS
    assert {m.__name__ for m in MACROS} == {
        "nightly_version",
        "docker_version",
        "version_number",
        "cache_url",
    }


def test_macro_values():
    assert nightly_version(NIGHT) == "main-4799.0.0-nightly-20260821-2100"
    assert nightly_version("2026-08-21T21:00:00Z", "4593.2.4") == "stable-4593.2.4-nightly-20260821-2100"
    assert docker_version("4593.2.4+nightly-20260821-2100") == "4593.2.4-nightly-20260821-2100"
    assert docker_version("stable-4593.2.4-nightly-20260821-2100") == "4593.2.4-nightly-20260821-2100"
    assert version_number("stable-4593.2.4-nightly-20260821-2100") == "4593.2.4+nightly-20260821-2100"
    with pytest.raises(ValueError, match="time zone"):
        nightly_version(dt.datetime(2026, 8, 21, 21, 0))


def test_templates_render_the_macros_in_a_task(run_dag, tmp_path, monkeypatch):
    from airflow.sdk import DAG, task

    # The read side of the cache (its http_url), never the ssh address (host, login, port).
    conn = {
        "conn_type": "flatcar_buildcache",
        "host": "cache.internal",
        "port": 2222,
        "login": "bincache",
        "extra": {"path_prefix": "/srv/bincache", "http_url": "https://cache.example.org:8443/bincache"},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", json.dumps(conn))
    config = tmp_path / "flatcar.yaml"
    config.write_text(
        yaml.safe_dump({"scripts_repo": "https://example.org/scripts.git", "buildcache_conn_id": CONN})
    )
    monkeypatch.setenv("FLATCAR_AIRFLOW_CONFIG", str(config))

    with DAG("flatcar_macros_test", schedule=None, start_date=NIGHT) as dag:

        @task
        def rendered(values: dict) -> dict:
            return values

        rendered(
            {
                "main": "{{ macros.flatcar.nightly_version(dag_run) }}",
                "branch": "{{ macros.flatcar.nightly_version(dag_run, '4593.2.4') }}",
                "docker": "{{ macros.flatcar.docker_version(macros.flatcar.nightly_version(dag_run)) }}",
                "cache": "{{ macros.flatcar.cache_url('images/amd64/'"
                " ~ macros.flatcar.version_number(macros.flatcar.nightly_version(dag_run)) ~ '/') }}",
                "cache_of": "{{ macros.flatcar.cache_url('sdk/', conn_id='" + CONN + "') }}",
            }
        )

    run = run_dag(dag, logical_date=NIGHT)
    assert run.state == "success"
    values = run.get_task_instance("rendered").xcom_pull(task_ids="rendered")
    assert values == {
        "main": "main-4799.0.0-nightly-20260821-2100",
        "branch": "stable-4593.2.4-nightly-20260821-2100",
        "docker": "4799.0.0-nightly-20260821-2100",
        "cache": "https://cache.example.org:8443/bincache/images/amd64/4799.0.0+nightly-20260821-2100/",
        "cache_of": "https://cache.example.org:8443/bincache/sdk/",
    }
