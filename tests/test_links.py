"""The step tasks' extra links (flatcar_airflow/links.py) of a real pipeline run under ``dag.test()``
(miniature scripts, the loopback build cache), read back the way the api-server's extra-links endpoint
reads them: the serialized DAG's task, ``get_extra_links(ti, name)``."""

from __future__ import annotations

import datetime as dt
import urllib.parse
from pathlib import Path

import pytest
import yaml
from connections import CACHE_CONN

from flatcar_airflow.config import Web, parse_config
from flatcar_airflow.links import BuildCacheLink, VersionTagLink, cache_directory, public_url
from flatcar_airflow.operators.step import FlatcarStepOperator
from flatcar_airflow.pipelines import build_dags
from flatcar_airflow.steps import BuildContext

DAG_ID = "flatcar_os_flatcar_4593"
NIGHT = dt.datetime(2026, 8, 21, 21, 0, tzinfo=dt.UTC)
TAG = "stable-4593.2.4-nightly-20260821-2100"
VER = "4593.2.4+nightly-20260821-2100"


def _config(origin: str, tmp_path: Path) -> str:
    return yaml.safe_dump(
        {
            "scripts_repo": origin,
            "buildcache_conn_id": CACHE_CONN,
            "runner": {"type": "local", "root": str(tmp_path / "build-root")},
            "tagging_cache": str(tmp_path / "tag-cache"),
            "arches": {"amd64": {"test_vendors": []}, "arm64": {"test_vendors": []}},
            "full": {"enabled": False},
            "os": {"branches": ["flatcar-4593"]},
            "image_changes": None,
            "retries": 0,
            "preflight": {"min_free_gb": 1, "network": "off"},
            # The origin is a local path (no web view of its own): a template gives the tag its link.
            "web": {"tag_url": "https://git.example.org/flatcar/scripts/tree/{tag}"},
            # A quick failure of amd64's first step: the failed step has its links too.
            "step_env": {"MINI_FAIL_STEP": "packages_build"},
        }
    )


def test_every_step_operator_has_the_links():
    assert {link.name for link in FlatcarStepOperator.operator_extra_links} == {"Build cache", "Version tag"}
    assert [type(link) for link in FlatcarStepOperator.operator_extra_links] == [
        BuildCacheLink,
        VersionTagLink,
    ]


def test_the_provider_lists_the_link_classes():
    from airflow.providers_manager import ProvidersManager

    names = ProvidersManager().extra_links_class_names
    assert {"flatcar_airflow.links.BuildCacheLink", "flatcar_airflow.links.VersionTagLink"} <= set(names)


@pytest.fixture
def cache(build_cache):
    build_cache.clear()
    yield build_cache
    build_cache.clear()


def test_links_of_a_real_run(run_dag, mini_origin, cache, connections, released_sdk, tmp_path):
    from airflow.models.serialized_dag import SerializedDagModel

    dag = build_dags(parse_config(_config(str(mini_origin.path), tmp_path)))[DAG_ID]
    run = run_dag(dag, logical_date=NIGHT, run_conf={"arches": ["amd64"]})
    assert run.get_task_instance("amd64.packages").state == "failed"

    serialized = SerializedDagModel.get_dag(DAG_ID)

    def links(task_id: str) -> dict[str, str | None]:
        ti = run.get_task_instance(task_id)
        task = serialized.get_task(task_id)
        return {name: task.get_extra_links(ti, name) or None for name in sorted(task.extra_links)}

    tag_url = f"https://git.example.org/flatcar/scripts/tree/{TAG}"
    dv = VER.replace("+", "-")
    # The arch-less step of an OS build: the SDK it builds with; per-arch steps: their own directories.
    assert links("packages_tag") == {"Build cache": cache.url("containers/4593.0.0/"), "Version tag": tag_url}
    assert links("amd64.packages") == {"Build cache": cache.url(f"containers/{dv}/"), "Version tag": tag_url}
    # A step that never ran (upstream failed) and an arch left out of the run have none.
    assert links("amd64.image") == {"Build cache": None, "Version tag": None}
    assert links("arm64.packages") == {"Build cache": None, "Version tag": None}

    # The cache links are the HTTPS read side: a real directory, and no ssh address, user or port.
    for task_id in ("packages_tag", "amd64.packages"):
        url = links(task_id)["Build cache"]
        parts = urllib.parse.urlsplit(url)
        assert parts.scheme == "https" and parts.port is None and "@" not in url, url
        assert cache.user not in url and str(cache.ssh_port) not in url
    assert cache.head("containers/4593.0.0/flatcar-sdk-all-4593.0.0.tar.zst") == 200


def test_each_step_links_its_own_cache_directory():
    ctx = BuildContext.from_build(
        {
            "tag": "main-4799.0.0-nightly-20260821-2100",
            "versionfile": {
                "FLATCAR_VERSION": "4799.0.0+nightly-20260821-2100",
                "FLATCAR_SDK_VERSION": "4799.0.0+nightly-20260821-2100",
            },
        },
        "arm64",
    )
    arch_less = BuildContext(ctx.tag, ctx.versionfile)
    ver, dv = "4799.0.0+nightly-20260821-2100", "4799.0.0-nightly-20260821-2100"
    assert cache_directory("sdk_bootstrap", arch_less, {"seed_version": "4798.0.0"}) == f"sdk/amd64/{ver}/"
    assert cache_directory("sdk_container", arch_less, {}) == f"containers/{dv}/"
    assert cache_directory("packages", ctx, {}) == f"containers/{dv}/"
    assert cache_directory("push_packages", ctx, {}) == f"boards/arm64-usr/{ver}/pkgs/"
    for step in ("image", "vms", "image_changes"):
        assert cache_directory(step, ctx, {"formats": ["qemu_uefi"]}) == f"images/arm64/{ver}/"
    assert cache_directory("test", ctx, {"vendor": "qemu_uefi"}) == f"testing/{ver}/arm64/qemu_uefi/"


def test_link_urls_never_carry_credentials_or_ssh_addresses():
    assert public_url("https://reader:pw@cache.example.org:8443/x/") == "https://cache.example.org:8443/x/"
    assert public_url("ssh://core@cache.example.org/srv") is None
    assert public_url("core@cache.example.org:/srv") is None
    assert public_url(None) is None
    web = Web()
    assert public_url(
        web.link("tag_url", "https://tok@github.com/flatcar/scripts.git", tag="stable-1.2.3")
    ) == ("https://github.com/flatcar/scripts/tree/stable-1.2.3")
    assert web.link("tag_url", "git@github.com:flatcar/scripts.git", tag="stable-1.2.3") is None
