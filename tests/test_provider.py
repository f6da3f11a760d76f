"""The package registers itself with Airflow through its entry point."""

from __future__ import annotations


def test_airflow_lists_the_provider():
    from airflow.providers_manager import ProvidersManager

    providers = ProvidersManager().providers
    assert "flatcar-airflow" in providers
    assert providers["flatcar-airflow"].data["name"] == "Flatcar Container Linux builds"
