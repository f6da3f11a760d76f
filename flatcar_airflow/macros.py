"""Template macros for DAG authors: ``{{ macros.flatcar.<name>(...) }}`` in any templated field.

Registered by the plugin (:class:`flatcar_airflow.plugin.FlatcarPlugin`, ``macros``), so Airflow's task
runner puts them under ``macros.flatcar``. They are the project's own functions (:mod:`.nightly`,
:mod:`.versions`, the build cache hook), not copies, so a template computes what the pipelines compute.
Airflow imports this module in every component with the plugin: it imports only the version modules;
the build cache hook and the configuration are imported when :func:`cache_url` is called.

INPUTS:  a run (``dag_run``, or its time), version strings, cache paths; for :func:`cache_url` the build
         cache connection (its ``http_url``) and the configuration's ``buildcache_conn_id``.
OUTPUTS: strings (version tags, version forms, https URLs).

* ``nightly_version(dag_run)`` -> ``main-4799.0.0-nightly-20260821-2100``: main's nightly of the run (its
  logical date, else its run_after, as the ``version`` task takes it); with ``version_id``
  (``FLATCAR_VERSION_ID`` of a release branch, e.g. ``'4593.2.4'``) that branch's nightly
  ``stable-4593.2.4-nightly-…``.
* ``docker_version('4593.2.4+nightly-20260821-2100')`` -> ``4593.2.4-nightly-20260821-2100``: the scripts'
  ``vernum_to_docker_image_version`` (a tag is taken too: ``stable-4593.2.4-nightly-…``).
* ``version_number('stable-4593.2.4-nightly-20260821-2100')`` -> ``4593.2.4+nightly-20260821-2100``: the
  version.txt form the cache's paths use.
* ``cache_url('images/amd64/4593.2.4+nightly-20260821-2100/')`` -> ``https://<cache>/images/amd64/…``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .nightly import branch_nightly, main_nightly, run_time
from .versions import VersionError, parse_any

__all__ = ["MACROS", "cache_url", "docker_version", "nightly_version", "version_number"]


def _when(run: Any) -> dt.datetime:
    if isinstance(run, dt.datetime):
        return run_time(run, None)
    if isinstance(run, str):
        try:
            return run_time(dt.datetime.fromisoformat(run.replace("Z", "+00:00")), None)
        except ValueError:
            raise VersionError(f"{run!r} is not an ISO 8601 time") from None
    # A DagRun (the template context's dag_run): its logical date, else the time it was to run after.
    return run_time(getattr(run, "logical_date", None), getattr(run, "run_after", None))


def nightly_version(run: Any, version_id: str | None = None, intermediate: bool = False) -> str:
    """The nightly version tag of a run: main's, or with ``version_id`` the release branch's."""
    when = _when(run)
    if version_id:
        return branch_nightly(version_id, when).tag
    return main_nightly(when, intermediate=intermediate).tag


def docker_version(version: str) -> str:
    """The docker form of a version or tag (``+`` becomes ``-``), as image tags and containers/ use it."""
    return parse_any(str(version)).docker_version


def version_number(version: str) -> str:
    """The version.txt form (``FLATCAR_VERSION``) of a tag or version, as the cache's paths use it."""
    return parse_any(str(version)).versionfile_version


def cache_url(path: str = "", conn_id: str | None = None) -> str:
    """The https URL of a build cache path (``conn_id`` default: the configuration's ``buildcache_conn_id``).

    Only the cache's read side (the connection's ``http_url``), without user info: never the ssh address.
    """
    from .hooks.buildcache import BuildCacheHook
    from .links import public_url

    path = str(path)
    if path.startswith("/") or ".." in path.split("/") or any(ch.isspace() for ch in path):
        raise ValueError(f"cache path {path!r} must be relative, without '..' or spaces")
    if conn_id is None:
        from .config import load_config

        conn_id = load_config().buildcache_conn_id
    base = public_url(BuildCacheHook(conn_id).settings.http_url)
    if base is None:
        raise ValueError(f"build cache connection {conn_id!r} has no http(s) URL")
    return f"{base.rstrip('/')}/{path}"


#: What the plugin registers.
MACROS = [nightly_version, docker_version, version_number, cache_url]
