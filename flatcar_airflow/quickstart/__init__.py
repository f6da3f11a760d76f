"""The quickstart: a running Flatcar CI on this machine in one command (``scripts/quickstart.sh``).

Airflow 3.3 on embedded defaults (SQLite, LocalExecutor: api-server, scheduler, dag-processor,
triggerer) with the pipelines, a local build cache (:mod:`flatcar_airflow.buildcache_server`), the
connections and pools; in the demo profile also a scripts origin made from the miniature scripts
repository and one demo full build. All state lives under one directory (:class:`Home`), so a second
start reuses runs, logs, cache and keys.
"""

from __future__ import annotations

from .home import Home, default_home

__all__ = ["Home", "default_home"]
