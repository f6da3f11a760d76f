"""The package registers itself with Airflow through its entry point."""

from __future__ import annotations


def test_airflow_lists_the_provider():
    from airflow.providers_manager import ProvidersManager

    providers = ProvidersManager().providers
    assert "flatcar-airflow" in providers
    assert providers["flatcar-airflow"].data["name"] == "Flatcar Container Linux builds"


def test_airflow_knows_the_build_cache_connection_type():
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    hooks = ProvidersManagerTaskRuntime().hooks
    assert "flatcar_buildcache" in hooks
    assert hooks["flatcar_buildcache"].hook_class_name == "flatcar_airflow.hooks.buildcache.BuildCacheHook"
