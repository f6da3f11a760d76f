"""``flatcar-airflow demo setup``: the demo profile of the compose stack (docs/compose.md).

The stack's ``airflow-init`` runs it: it makes the demo scripts origin (the miniature repository,
:func:`~flatcar_airflow.demo.make_demo_origin`) under the build hosts' root directory, where the worker
(which tags it) and the runner containers (which fetch it) both see it; the seed SDK and mantle images on
the Docker host (:func:`~flatcar_airflow.demo.make_demo_images`); and the demo configuration: docker
runner on the stack's network, per-arch Celery queues, no schedules.

A configuration that is not the demo's (no :data:`DEMO_HEADER` first line) is never overwritten: a
deployment's own file stays as it is. Prints one JSON object, like every flatcar-airflow command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["DEMO_HEADER", "add_arguments", "demo_config", "main", "run", "run_and_print"]

#: The first line of a configuration this command wrote (and may rewrite).
DEMO_HEADER = (
    "# flatcar-airflow demo profile, written by `flatcar-airflow demo setup` (the stack's airflow-init)."
)
DEFAULT_RUNNER_IMAGE = "flatcar-airflow-runner:0.1.0"


def demo_config(root: Path, runner_image: str, network: str, origin: Path) -> str:
    """The demo's configuration: the miniature origin, runner containers, one Celery queue per arch."""
    import yaml

    data = {
        "scripts_repo": str(origin),
        "buildcache_conn_id": "flatcar_buildcache",
        "runner": {"type": "docker", "image": runner_image, "root": str(root), "network_mode": network},
        "queue": "default",
        "tagging_cache": str(root / "tagging-cache"),
        "arches": {
            "amd64": {"formats": ["qemu_uefi", "pxe"], "test_vendors": ["qemu_uefi"], "queue": "amd64"},
            "arm64": {"formats": ["qemu_uefi"], "test_vendors": ["qemu_uefi"], "queue": "arm64"},
        },
        # No schedule: unpausing the demo DAG starts no run; builds are triggered by hand.
        "full": {"enabled": True, "branch": "main", "schedule": None, "arches": ["amd64", "arm64"]},
        "os": {"branches": [], "schedule": None},
        "heartbeat_interval": 30,
        "retries": 0,
        # The miniature scripts need a few MB and no internet: check the host for that.
        "preflight": {"min_free_gb": 1, "network": "off"},
    }
    header = (
        f"{DEMO_HEADER}\n"
        "# Edit freely, but remove the first line first: a file that starts with it is rewritten by the next "
        "setup.\n# docs/configuration.md has every key.\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    setup = actions.add_parser(
        "setup", help="make the demo origin, images and configuration (idempotent)", description=__doc__
    )
    setup.add_argument(
        "--root", type=Path, required=True, help="the runner's root directory (same path on the Docker host)"
    )
    setup.add_argument("--config", type=Path, required=True, help="the configuration file to write")
    setup.add_argument("--runner-image", default=DEFAULT_RUNNER_IMAGE, help="the docker runner's image")
    setup.add_argument(
        "--network", default="host", help="the runner containers' network (the stack's network by name)"
    )
    setup.add_argument(
        "--mini-scripts",
        type=Path,
        default=os.environ.get("FLATCAR_AIRFLOW_MINI_SCRIPTS") or None,
        help="the miniature scripts repository (default $FLATCAR_AIRFLOW_MINI_SCRIPTS or the checkout's)",
    )
    setup.add_argument("--no-images", action="store_true", help="do not make the seed SDK and mantle images")


def run(args: argparse.Namespace) -> dict:
    from . import find_mini_scripts, make_demo_images, make_demo_origin

    root = args.root.absolute()
    mini = args.mini_scripts or find_mini_scripts()
    origin = root / "demo" / "scripts.git"
    made_origin = False
    if not origin.exists():
        make_demo_origin(origin, mini)
        made_origin = True
    images = [] if args.no_images else make_demo_images(mini)
    config = args.config.absolute()
    written = False
    if not config.exists() or config.read_text().startswith(DEMO_HEADER):
        config.parent.mkdir(parents=True, exist_ok=True)
        text = demo_config(root, args.runner_image, args.network, origin)
        if not config.exists() or config.read_text() != text:
            tmp = config.with_name(f".{config.name}.tmp")
            tmp.write_text(text)
            tmp.chmod(0o644)
            tmp.replace(config)
            written = True
    return {
        "origin": str(origin),
        "origin_created": made_origin,
        "images_made": images,
        "config": str(config),
        "config_written": written,
        "config_is_demo": config.read_text().startswith(DEMO_HEADER),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flatcar-airflow demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_and_print(parser.parse_args(argv))


def run_and_print(args: argparse.Namespace) -> int:
    """Run an action; print its JSON result (or the error) like every flatcar-airflow command."""
    try:
        result = run(args)
    except (OSError, RuntimeError) as err:
        print(json.dumps({"ok": False, "error": type(err).__name__, "message": str(err)}, indent=2))
        print(f"flatcar-airflow demo: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"ok": True, **result}, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
