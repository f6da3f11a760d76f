"""``flatcar-airflow doctor``: the preflight checks of every build host the configuration uses.

INPUTS:  the configuration (``--config``, ``$FLATCAR_AIRFLOW_CONFIG`` or the default): its runners (the
         default one and each arch's own), its ``preflight`` section, the build cache connection
         (``--conn-id``, else ``buildcache_conn_id``; read as every Airflow component reads connections).
OUTPUTS: one line per check and a verdict per host on standard error, one JSON object on standard
         output; exit status 0 when every host is ready, 1 when one has a problem, 2 for a bad
         configuration or a missing connection.

For an operator setting up a build host: the same checks the pipelines' ``preflight`` tasks run, from
where this command runs (a local runner checks this machine, an ssh runner the build host, a docker
runner a runner container on the Docker host).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

__all__ = ["add_arguments", "run_and_print"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="configuration file (default $FLATCAR_AIRFLOW_CONFIG)")
    parser.add_argument("--conn-id", help="the build cache connection (default: the configuration's)")
    parser.add_argument(
        "--arch", choices=("amd64", "arm64"), action="append", help="check only this arch's host (repeatable)"
    )
    parser.add_argument("--no-cache", action="store_true", help="do not check the build cache")


def _targets(config, arches: list[str] | None) -> list[tuple[str, dict]]:
    """``(which steps, runner configuration)`` per distinct runner, the default one first."""
    targets: list[tuple[str, dict]] = []
    wanted = arches or list(config.arches)
    if not arches:
        targets.append(("default runner", dict(config.runner)))
    for arch in wanted:
        runner = dict(config.arch_runner(arch))
        if all(runner != seen for _, seen in targets):
            targets.append((f"{arch} steps", runner))
    return targets


def run_and_print(args: argparse.Namespace) -> int:
    from ..config import ConfigError, load_config
    from ..hooks.buildcache import BuildCacheHook
    from ..runners import make_runner
    from . import describe, run_preflight

    try:
        config = load_config(args.config)
    except ConfigError as err:
        print(f"flatcar-airflow doctor: {err}", file=sys.stderr)
        return 2
    settings = None
    if not args.no_cache:
        conn_id = args.conn_id or config.buildcache_conn_id
        try:
            settings = BuildCacheHook(conn_id).settings
        except Exception as err:
            print(f"flatcar-airflow doctor: build cache connection {conn_id!r}: {err}", file=sys.stderr)
            return 2
    import logging

    for handler in logging.getLogger().handlers:  # Airflow logs to standard output: the JSON's place
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)
    reports = []
    for label, runner in _targets(config, args.arch):
        # Log lines of the libraries (paramiko, docker) go to standard error: standard output is the JSON.
        with contextlib.redirect_stdout(sys.stderr):
            report = run_preflight(make_runner(runner), config.preflight, settings)
        print(f"{label}: {report.target}", file=sys.stderr)
        for line in describe(report):
            print(f"  {line}", file=sys.stderr)
        print(f"  => {report.message()}", file=sys.stderr)
        reports.append({"for": label, **report.to_dict(), "message": report.message()})
    ready = all(report["ok"] for report in reports)
    print(json.dumps({"ok": ready, "hosts": reports}, indent=2))
    return 0 if ready else 1
