"""What a release published, in the build's manifests and its builds index entry (the ``record`` task).

Each manifest copy of the build gains a ``releases`` list with one record per release run (a re-run of
the same DAG run replaces its record, so recording is idempotent); the index entry then carries
``released`` (the offers published so far, when, by which run) for the builds page.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from ..config import Config

__all__ = ["record_release"]


def record_release(config: Config, context: Mapping[str, Any]) -> dict[str, Any]:
    from ..buildindex.store import update_index
    from ..hooks.buildcache import BuildCacheHook

    ti = context["ti"]
    dag_run = context["dag_run"]
    plan = ti.xcom_pull(task_ids="check") or {}
    result = ti.xcom_pull(task_ids="release") or {}
    record = {
        "dag_id": dag_run.dag_id,
        "run_id": dag_run.run_id,
        "offers": list(plan.get("offers") or []),
        "published_at": result.get("finished_at") or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "artifacts": [
            {key: artifact.get(key) for key in ("kind", "path", "arch", "url", "size")}
            for artifact in result.get("artifacts") or []
        ],
    }
    hook = BuildCacheHook(config.buildcache_conn_id)
    paths = list(plan.get("manifests") or [])
    manifest: dict[str, Any] = {}
    for path in paths:
        manifest = json.loads(hook.read_text(path))
        releases = [item for item in manifest.get("releases") or [] if item.get("run_id") != record["run_id"]]
        manifest["releases"] = [*releases, record]
        hook.upload(path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    index = update_index(hook, manifest, paths) if manifest else None
    return {"tag": plan.get("tag"), "release": record, "manifests": paths, "builds_index": index}
