"""``flatcar-airflow gc``: the build cache's garbage collection from a shell (a dry run by default).

The same collection as the ``flatcar_buildcache_gc`` DAG (:mod:`.collector`). The versions queued and
running runs reference come from Airflow's metadata database (the command runs on the Airflow host); a
command cannot take the tagging pool, so ``--apply`` is for a quiet moment, and the DAG is the safe way
(docs/retention.md).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["add_arguments", "in_use_from_db", "run_and_print"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="configuration file (default $FLATCAR_AIRFLOW_CONFIG)")
    parser.add_argument(
        "--apply", action="store_true", help="remove what the report lists (default: dry run)"
    )
    parser.add_argument("--keep", type=int, help="development builds to keep per branch (retention.keep)")
    parser.add_argument("--min-age-days", type=int, help="keep everything younger (retention.min_age_days)")
    parser.add_argument(
        "--conn-id", help="the build cache connection (default: the configuration's buildcache_conn_id)"
    )


def in_use_from_db(dag_ids: Iterable[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Tags and version numbers of the build DAGs' queued and running runs (the metadata database)."""
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    tags: dict[str, str] = {}
    versions: dict[str, str] = {}
    with create_session() as session:
        runs = session.execute(
            select(DagRun.dag_id, DagRun.run_id).where(
                DagRun.dag_id.in_(list(dag_ids)), DagRun.state.in_(("queued", "running"))
            )
        ).all()
        for dag_id, run_id in runs:
            who = f"{dag_id} run {run_id}"
            rows = session.scalars(
                XComModel.get_many(
                    run_id=run_id, key="return_value", dag_ids=dag_id, task_ids=["version", "tag"]
                )
            ).all()
            for row in rows:
                value = XComModel.deserialize_value(row)
                if not isinstance(value, dict):
                    continue
                for key in ("version", "tag"):
                    if isinstance(value.get(key), str) and value[key]:
                        tags.setdefault(value[key], who)
                for key in ("FLATCAR_VERSION", "FLATCAR_SDK_VERSION"):
                    found = (value.get("versionfile") or {}).get(key)
                    if isinstance(found, str):
                        versions.setdefault(found, who)
    return tags, versions


def run(args: argparse.Namespace) -> dict:
    from ..buildindex.cli import _hook
    from ..config import load_config
    from ..runners import job_key
    from .collector import build_dag_ids, collect

    config = load_config(args.config)
    for name in ("keep", "min_age_days"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must not be negative")
    hook = _hook(args.conn_id or config.buildcache_conn_id)
    _ = hook.settings  # a missing or incomplete connection is an invalid input: nothing is read yet
    in_use, in_use_versions = in_use_from_db(build_dag_ids(config))
    now = dt.datetime.now(dt.UTC)
    return collect(
        config,
        hook,
        apply=args.apply,
        in_use=in_use,
        in_use_versions=in_use_versions,
        key=job_key("flatcar-airflow-gc", now.strftime("%Y%m%dT%H%M%S")),
        say=lambda line: print(line, file=sys.stderr),
        keep=args.keep,
        min_age_days=args.min_age_days,
        now=now,
    )


def run_and_print(args: argparse.Namespace) -> int:
    """Run, print the report as JSON; 0 ok, 1 the collection failed or was refused, 2 invalid input."""
    with contextlib.redirect_stdout(sys.stderr):
        from airflow.sdk.exceptions import AirflowNotFoundException
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            output, status = {"ok": True, **run(args)}, 0
    except (ValueError, AirflowNotFoundException) as err:
        output, status = {"ok": False, "error": type(err).__name__, "message": str(err)}, 2
    except Exception as err:
        output, status = {"ok": False, "error": type(err).__name__, "message": str(err) or repr(err)}, 1
    print(json.dumps(output, indent=2, sort_keys=True))
    if status:
        print(f"flatcar-airflow gc: {output['message']}", file=sys.stderr)
    return status
