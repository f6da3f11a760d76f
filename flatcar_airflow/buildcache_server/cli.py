"""``flatcar-airflow buildcache init|serve|connection``: set up, run and connect to a build cache server.

The same parser serves ``python3 -m flatcar_airflow.buildcache_server`` in the cache container, where
Airflow is not installed. ``init`` and ``connection`` print one JSON object; ``serve`` runs in the
foreground until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .server import BuildCacheServer, ServerError, Settings

__all__ = ["add_arguments", "create_connection", "main", "run", "run_and_print"]

DEFAULT_STATE = "/var/lib/flatcar-buildcache"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state",
        default=os.environ.get("FLATCAR_BUILDCACHE_STATE", DEFAULT_STATE),
        help=f"the server's state directory (default $FLATCAR_BUILDCACHE_STATE or {DEFAULT_STATE})",
    )
    actions = parser.add_subparsers(dest="action", required=True)
    init = actions.add_parser("init", help="create keys, CA and settings (idempotent: keys are kept)")
    init.add_argument("--server", help="BUILDCACHE_SERVER: the name or IP clients use (in the certificate)")
    init.add_argument("--listen", help="address to bind (default: the server's IP, or all)")
    init.add_argument("--ssh-port", type=int, help="ssh port for rsync writes (default 2222)")
    init.add_argument("--https-port", type=int, help="HTTPS port (default 443; the scripts read port 443)")
    init.add_argument("--user", help="ssh login of the writers (default: the user running the server)")
    init.add_argument("--data", help="the cache directory (default STATE/data)")
    init.add_argument("--name", action="append", default=None, help="another name for the certificate")
    init.add_argument("--tls-cert", help="your own certificate (PEM) instead of a generated CA's")
    init.add_argument("--tls-key", help="the key of --tls-cert (PEM)")
    actions.add_parser("serve", help="run sshd and nginx in the foreground (init first)")
    connection = actions.add_parser("connection", help="print (or create) the flatcar_buildcache connection")
    connection.add_argument("--create", metavar="CONN_ID", help="create it in Airflow instead of printing it")
    connection.add_argument("--host", help="the host name workers use, if not the server's name")


def run(args: argparse.Namespace) -> dict | int:
    server = BuildCacheServer(args.state)
    if args.action == "init":
        settings = server.settings() if server.settings_file.exists() else Settings()
        for name in ("server", "listen", "ssh_port", "https_port", "user", "data", "tls_cert", "tls_key"):
            value = getattr(args, name)
            if value is not None:
                setattr(settings, name, value)
        if args.name is not None:
            settings.names = args.name
        settings = server.init(settings)
        return {"state": str(server.state), "settings": vars(settings), "host_key": server.host_key()}
    if args.action == "serve":
        return server.serve()
    connection = server.connection()
    if args.host:
        connection["host"] = args.host
    if args.create:
        create_connection(args.create, connection)
        return {"created": args.create, "host": connection["host"], "port": connection["port"]}
    return {"connection": connection}


def create_connection(
    conn_id: str, connection: dict, airflow: str | None = None, env: dict[str, str] | None = None
) -> None:
    """Create or replace an Airflow connection through ``airflow connections import`` (a 0600 file, so the
    private key is never on a command line)."""
    airflow = (
        airflow or shutil.which("airflow", path=str(Path(sys.executable).parent)) or shutil.which("airflow")
    )
    if airflow is None:
        raise ServerError("the airflow command is not installed here: print the connection instead")
    with tempfile.TemporaryDirectory(prefix="flatcar-conn-") as tmp:
        path = Path(tmp) / "connections.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({conn_id: {**connection, "extra": json.dumps(connection["extra"])}}, handle)
        proc = subprocess.run(
            [airflow, "connections", "import", "--overwrite", str(path)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=300,
            check=False,
            env=env,
        )
    if proc.returncode != 0:
        raise ServerError(f"airflow connections import failed: {proc.stderr.strip()[-800:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flatcar-buildcache", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_and_print(parser.parse_args(argv))


def run_and_print(args: argparse.Namespace) -> int:
    """Run an action; print its JSON result (or the error) like every flatcar-airflow command."""
    try:
        result = run(args)
    except (ServerError, OSError) as err:
        print(json.dumps({"ok": False, "error": type(err).__name__, "message": str(err)}, indent=2))
        print(f"flatcar-buildcache: {err}", file=sys.stderr)
        return 1
    if isinstance(result, int):
        return result
    print(json.dumps({"ok": True, **result}, indent=2, sort_keys=True))
    return 0
