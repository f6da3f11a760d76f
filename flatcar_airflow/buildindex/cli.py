"""``flatcar-airflow index rebuild``: rebuild the builds index of a branch (or of all) from the manifests.

For the day the index was lost or corrupted (the summary tasks start a new one then, and say so). Prints
one JSON object like every flatcar-airflow command; exit status 0 success, 1 the cache could not be read
or written or has no build of the branch, 2 an invalid input (nothing was done).

The connection is read like any Airflow process on this machine reads it: ``AIRFLOW_CONN_<ID>`` and the
configured secrets backends, then the metadata database (where ``flatcar-airflow buildcache connection
--create`` and the quickstart put it). Writes need ``ssh`` and ``rsync``, as on the workers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path

__all__ = ["add_arguments", "run", "run_and_print"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    rebuild = actions.add_parser(
        "rebuild",
        help="rebuild a branch's builds index from the build manifests in the cache",
        description="List images/<arch>/ in the build cache, read every flatcar-airflow manifest, keep the "
        "branch's builds and write flatcar-airflow/builds/<branch>.json as the summary task does.",
    )
    which = rebuild.add_mutually_exclusive_group(required=True)
    which.add_argument("--branch", help="the branch (the DAG's branch, e.g. main or flatcar-4593)")
    which.add_argument("--all", action="store_true", help="every branch that has a manifest in the cache")
    rebuild.add_argument(
        "--conn-id", help="the build cache connection (default: the configuration's buildcache_conn_id)"
    )
    rebuild.add_argument("--config", type=Path, help="configuration file (default $FLATCAR_AIRFLOW_CONFIG)")


def _hook(conn_id: str):
    from airflow.sdk.exceptions import AirflowNotFoundException

    from ..hooks.buildcache import BuildCacheHook

    class _CommandHook(BuildCacheHook):
        """Outside a task the Task SDK sees environment variables and secrets backends only; a command
        run on the Airflow host also finds connections in the metadata database."""

        @classmethod
        def get_connection(cls, conn_id: str):
            try:
                return super().get_connection(conn_id)
            except AirflowNotFoundException:
                # Not Connection.get_connection_from_secrets: once the Task SDK's lookup has run, it hands
                # the lookup back to the Task SDK.
                from airflow.secrets.metastore import MetastoreBackend

                connection = MetastoreBackend().get_connection(conn_id)
                if connection is None:
                    raise
                return connection

    return _CommandHook(conn_id)


def run(args: argparse.Namespace) -> dict:
    from .entries import index_file_name
    from .store import rebuild

    if not args.all:
        index_file_name(args.branch)  # an invalid name is refused before anything is read
    conn_id = args.conn_id
    if not conn_id:
        from ..config import load_config

        conn_id = load_config(args.config).buildcache_conn_id
    hook = _hook(conn_id)
    _ = hook.settings  # a missing or incomplete connection is an invalid input: nothing is read yet
    return {"conn_id": conn_id, **rebuild(hook, None if args.all else args.branch)}


def run_and_print(args: argparse.Namespace) -> int:
    """Run, print the JSON result (or the error); 0 ok, 1 cache or build problem, 2 invalid input."""
    # Airflow may print while it loads (its configuration, deprecations): standard output carries the one
    # JSON object only.
    with contextlib.redirect_stdout(sys.stderr):
        from airflow.sdk.exceptions import AirflowNotFoundException

    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(message)s",
    )
    try:
        with contextlib.redirect_stdout(sys.stderr):
            output, status = {"ok": True, **run(args)}, 0
    except (ValueError, AirflowNotFoundException) as err:
        output, status = {"ok": False, "error": type(err).__name__, "message": str(err)}, 2
    except Exception as err:  # the cache, ssh/rsync, Airflow's database: still one JSON object
        output, status = {"ok": False, "error": type(err).__name__, "message": str(err) or repr(err)}, 1
    print(json.dumps(output, indent=2, sort_keys=True))
    if status:
        print(f"flatcar-airflow index: {output['message']}", file=sys.stderr)
    return status
