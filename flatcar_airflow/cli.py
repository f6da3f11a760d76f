"""``flatcar-airflow``: validate and compute Flatcar versions, and tag a scripts repo, from a shell.

It runs the same library code the DAGs use and prints one JSON object on standard output
(``"ok": true`` plus the result, or ``"ok": false`` with the error). Exit status: 0 success, 1 a git or
tagging failure, 2 an invalid input (nothing was done).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import re
import sys
from pathlib import Path

from .nightly import branch_nightly, main_nightly
from .scripts_repo import SUBMODULE_PATHS, GitError, ScriptsRepo, check_ref_name
from .tagging import BuildKind, CIIdentity, TaggingError, TagRequest, nightly_version, tag_version
from .versions import VersionError, parse_any, parse_tag

__all__ = ["main"]


def _time(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date and time") from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (append Z for UTC)")
    return when


def _submodule_ref(text: str) -> tuple[str, str]:
    name, sep, ref = text.partition("=")
    if not sep or not name or not ref:
        raise argparse.ArgumentTypeError(f"{text!r} must be NAME=REF, e.g. coreos-overlay=main-3066.0.0")
    return name, ref


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flatcar-airflow",
        description="Flatcar versions and scripts-repo tagging (the code the flatcar-airflow DAGs run).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to standard error")
    commands = parser.add_subparsers(dest="command", required=True)

    version = commands.add_parser(
        "version",
        help="validate a version tag or number and print its forms",
        description="Validate a tag name (stable-4593.2.5-nightly-20260821-2100) or a version number "
        "(4593.2.5, 4593.2.5+nightly-20260821-2100) and print channel, version.txt and docker forms.",
    )
    version.add_argument("version")

    nightly = commands.add_parser(
        "nightly",
        help="compute a nightly version for a run time",
        description="Compute the nightly version for a run time (never the wall clock): main's day "
        "number, or a maintenance branch's FLATCAR_VERSION_ID.",
    )
    nightly.add_argument("--at", type=_time, required=True, help="the run's time, ISO 8601 with zone")
    which = nightly.add_mutually_exclusive_group(required=True)
    which.add_argument("--main", action="store_true", help="a nightly of main")
    which.add_argument("--version-id", help="a maintenance branch's FLATCAR_VERSION_ID, e.g. 4593.2.5")
    nightly.add_argument("--intermediate", action="store_true", help="two-phase first phase (main only)")

    tag = commands.add_parser(
        "tag",
        help="create (or reuse) a version tag in a scripts repository and push it",
        description="Write version.txt, commit 'New version: <tag>', tag and push, like the scripts' "
        "update_and_push_version; pushes the branch only for a nightly of the branch head.",
    )
    tag.add_argument("--repo", required=True, help="scripts repository URL or path (fetch and push)")
    tag.add_argument("--ref", required=True, help="branch, tag or full commit id to build")
    tag.add_argument(
        "--kind",
        choices=[k.value for k in BuildKind],
        required=True,
        help="full: SDK and OS get the version; os: keep the branch's SDK",
    )
    what = tag.add_mutually_exclusive_group(required=True)
    what.add_argument("--version", help="the version tag to create, e.g. main-4799.0.0-dev-1")
    what.add_argument("--nightly", action="store_true", help="compute the nightly version from --at")
    tag.add_argument("--at", type=_time, help="the run's time for --nightly (ISO 8601 with zone)")
    tag.add_argument(
        "--as-of",
        type=_time,
        help="backfill: build the branch as it was at this time; never pushes the branch",
    )
    tag.add_argument(
        "--commit",
        help="build exactly this commit (full id); never pushes the branch unless it is the branch head",
    )
    tag.add_argument(
        "--submodule-ref",
        type=_submodule_ref,
        action="append",
        default=[],
        metavar="NAME=REF",
        help="seed-era layout: ref to pin instead of the matching tag",
    )
    tag.add_argument("--force", action="store_true", help="disable the nightly shortcut")
    tag.add_argument(
        "--outputs-exist",
        choices=["yes", "no"],
        help="answer for the nightly shortcut's check that the tagged build's outputs exist "
        "(without it the shortcut never skips)",
    )
    tag.add_argument("--cache-dir", type=Path, help="cache directory (default $FLATCAR_AIRFLOW_CACHE)")
    tag.add_argument("--author", default=CIIdentity.name, help="CI author name")
    tag.add_argument("--email", default=CIIdentity.email, help="CI author e-mail")

    pools = commands.add_parser(
        "pools",
        help="create or update the Airflow pools the pipelines use",
        description="Create (or resize) the pools of the configuration (pools.steps, pools.tagging) in the "
        "Airflow of this environment, with `airflow pools set`.",
    )
    pools.add_argument("--config", type=Path, help="configuration file (default $FLATCAR_AIRFLOW_CONFIG)")

    from .buildcache_server.cli import add_arguments as buildcache_arguments
    from .buildindex.cli import add_arguments as index_arguments
    from .demo.cli import add_arguments as demo_arguments
    from .preflight.cli import add_arguments as doctor_arguments
    from .quickstart.command import add_arguments as quickstart_arguments
    from .retention.cli import add_arguments as gc_arguments

    quickstart_arguments(
        commands.add_parser(
            "quickstart",
            help="run Airflow with the pipelines, a build cache and a demo build on this machine",
            description="Start (in the foreground), stop or show the quickstart: Airflow on embedded "
            "defaults, a local build cache, the connections and pools, and (demo profile) one demo build.",
        )
    )
    buildcache_arguments(
        commands.add_parser(
            "buildcache",
            help="set up, serve and connect to a build cache server (sshd + rsync, nginx HTTPS)",
            description="The project's build cache service: init (keys, CA, settings), serve (foreground), "
            "connection (print or create the flatcar_buildcache Airflow connection).",
        )
    )
    index_arguments(
        commands.add_parser(
            "index",
            help="the per-branch builds index in the build cache (rebuild it from the manifests)",
            description="rebuild: write flatcar-airflow/builds/<branch>.json from the build manifests in the "
            "cache, as the summary tasks keep it (docs/builds-index.md).",
        )
    )
    doctor_arguments(
        commands.add_parser(
            "doctor",
            help="check the build hosts of the configuration: tools, sudo, docker, disk, cache, network",
            description="The preflight checks the pipelines run before a build's first step on a build "
            "host (docs/runners.md#preflight), for every runner of the configuration.",
        )
    )
    gc_arguments(
        commands.add_parser(
            "gc",
            help="garbage-collect the build cache by the retention policy (a dry run unless --apply)",
            description="The flatcar_buildcache_gc DAG's collection from a shell: the report (versions, "
            "paths, "
            "bytes, tags) as JSON; --apply runs the scripts' garbage_collect for real (docs/retention.md).",
        )
    )
    demo_arguments(
        commands.add_parser(
            "demo",
            help="make the demo profile's origin, images and configuration (the compose stack's init)",
            description="setup: the miniature scripts origin under the runner's root, the seed SDK and "
            "mantle images, and the demo configuration (docs/compose.md).",
        )
    )
    return parser


def _run(args: argparse.Namespace) -> dict:
    if args.command == "version":
        return {"version": parse_any(args.version).to_dict()}
    if args.command == "pools":
        return _pools(args)
    if args.command == "nightly":
        if args.main:
            return {"version": main_nightly(args.at, intermediate=args.intermediate).to_dict()}
        if args.intermediate:
            raise VersionError("INTERMEDIATE nightlies exist for main only")
        return {"version": _checked("--version-id", branch_nightly, args.version_id, args.at).to_dict()}
    return _tag(args)


def _checked(option: str, check, *args, **kwargs):
    """``check(*args, **kwargs)``; its ValueError (a VersionError too) names the option it came from."""
    try:
        return check(*args, **kwargs)
    except ValueError as err:
        raise type(err)(f"{option}: {err}") from None


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse a bad argument before anything happens (exit status 2: nothing was done).

    Everything after this reaches the origin or the cache: the nightly of an OS build and ``--as-of``
    run ``git ls-remote`` and fetch, and the cache's lock creates the cache directory. TagRequest checks
    the same again, but only once the nightly version is known, which is too late.
    """
    if args.nightly and args.at is None:
        raise VersionError("--nightly needs --at, the run's time (versions never come from the wall clock)")
    if args.as_of and args.commit:
        raise VersionError("--as-of and --commit both choose the commit; give one")
    check_ref_name(args.ref, "--ref")
    if args.commit is not None and not re.fullmatch(r"[0-9a-f]{40}", args.commit):
        raise ValueError(f"--commit {args.commit!r} must be a full 40-character lower-case commit id")
    for name, ref in args.submodule_ref:
        if name not in SUBMODULE_PATHS:
            raise ValueError(
                f"--submodule-ref: unknown submodule {name!r}; known: {', '.join(SUBMODULE_PATHS)}"
            )
        check_ref_name(ref, f"--submodule-ref {name}")
    _checked("--author", CIIdentity, args.author, CIIdentity.email)
    _checked("--email", CIIdentity, CIIdentity.name, args.email)


def _tag(args: argparse.Namespace) -> dict:
    _check_arguments(args)
    kind = BuildKind(args.kind)
    identity = CIIdentity(args.author, args.email)
    version = _checked("--version", parse_tag, args.version) if args.version else None
    submodule_refs = dict(args.submodule_ref)
    repo = _checked("--repo", ScriptsRepo, args.repo, cache_dir=args.cache_dir)
    commit = args.commit
    if args.as_of:
        commit = repo.commit_at(args.ref, args.as_of)
    if version is None:
        version = nightly_version(repo, args.ref, kind, args.at, commit=commit)
    outputs = None if args.outputs_exist is None else (lambda _candidate: args.outputs_exist == "yes")
    request = TagRequest(
        version=version,
        ref=args.ref,
        kind=kind,
        commit=commit,
        submodule_refs=submodule_refs,
        force=args.force,
        allow_branch_push=args.as_of is None,
        outputs_exist=outputs,
        identity=identity,
    )
    return {"version": version.to_dict(), "result": tag_version(repo, request).to_dict()}


def _pools(args: argparse.Namespace) -> dict:
    import shutil
    import subprocess

    from .config import load_config

    config = load_config(args.config)
    airflow = shutil.which("airflow", path=str(Path(sys.executable).parent)) or shutil.which("airflow")
    if airflow is None:
        raise GitError("the airflow command is not installed here")
    created = []
    for pool, what in (
        (config.pools.steps, "Flatcar build steps"),
        (config.pools.tagging, "Flatcar tagging"),
    ):
        proc = subprocess.run(
            [airflow, "pools", "set", pool.name, str(pool.slots), what],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise GitError(f"airflow pools set {pool.name} failed: {proc.stderr.strip()[-500:]}")
        created.append({"name": pool.name, "slots": pool.slots})
    return {"pools": created}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "quickstart":
        from .quickstart.command import run as quickstart

        return quickstart(args)
    if args.command == "buildcache":
        from .buildcache_server.cli import run_and_print

        return run_and_print(args)
    if args.command == "index":
        from .buildindex.cli import run_and_print as index_command

        return index_command(args)
    if args.command == "demo":
        from .demo.cli import run_and_print as demo_command

        return demo_command(args)
    if args.command == "doctor":
        from .preflight.cli import run_and_print as doctor

        return doctor(args)
    if args.command == "gc":
        from .retention.cli import run_and_print as gc_command

        return gc_command(args)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(message)s",
    )
    try:
        output = {"ok": True, **_run(args)}
        status = 0
    except (VersionError, ValueError) as err:
        output, status = {"ok": False, "error": type(err).__name__, "message": str(err)}, 2
    except (GitError, TaggingError) as err:
        output, status = {"ok": False, "error": type(err).__name__, "message": str(err)}, 1
    print(json.dumps(output, indent=2, sort_keys=True))
    if status:
        print(f"flatcar-airflow: {output['message']}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
