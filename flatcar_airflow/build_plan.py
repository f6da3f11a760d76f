"""What the pipeline tasks ``version``, ``tag`` and ``summary`` do (kept out of the DAG file: they run
only on workers).

``resolve_build`` turns a run into a build plan: the version (from params, or the nightly version of the
run's time), the ref and, for a backfill, the commit the branch had at the run's logical time. Params are
checked again here, before any side effect, with the same rules as everywhere else.
``tag_build`` creates or reuses the tag (the nightly shortcut skips the whole build). ``summarize`` writes
the build manifest to the build cache next to the images, puts the build into its branch's builds index
(:mod:`flatcar_airflow.buildindex`), decides whether the build is a failure or recovery notice
(:mod:`flatcar_airflow.notifications`, when notices are configured) and fails the run if a step failed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from .artifacts import container, generic_image, image_file
from .buildindex.store import update_index
from .config import Config
from .hooks.buildcache import BuildCacheHook
from .nightly import run_time
from .notifications import make_notice, previous_build
from .scripts_repo import ScriptsRepo, check_ref_name
from .steps import BuildContext
from .tagging import BuildKind, CIIdentity, ShortcutCandidate, TagRequest, nightly_version, tag_version
from .versions import FlatcarVersion, VersionError, check_safe_string, parse_any, parse_build_id, parse_tag

__all__ = ["resolve_build", "summarize", "tag_build"]

MANIFEST_NAME = "flatcar-airflow-manifest.json"


def _repo(config: Config) -> ScriptsRepo:
    return ScriptsRepo(
        config.scripts_repo, cache_dir=Path(config.tagging_cache) if config.tagging_cache else None
    )


def _check_params(config: Config, kind: BuildKind, params: Mapping) -> dict:
    """The run's params, validated again (the trigger form validated them against the schema)."""
    try:
        ref = check_ref_name(str(params.get("ref") or ""), "ref")
        version = parse_tag(params["version"]) if params.get("version") else None
        build_id = params.get("build_id") or None
        if build_id:
            parse_build_id(build_id)
        if version and build_id:
            raise ValueError("give either a version or a build id suffix, not both")
        configured = config.full.arches if kind is BuildKind.FULL else config.os.arches
        arches = list(params.get("arches") or configured)
        unknown = [arch for arch in arches if arch not in configured]
        if unknown or not arches:
            raise ValueError(f"arches {unknown or arches} are not among this DAG's {configured}")
        formats = params.get("formats")
        for name in formats or []:
            check_safe_string(name, "image format")
        vendors = params.get("test_vendors")
        for arch in arches:
            missing = [v for v in vendors or [] if v not in config.arches[arch].test_vendors]
            if missing:
                names = ", ".join(repr(name) for name in missing)
                raise ValueError(
                    f"test vendor(s) {names} have no task for {arch} in this DAG; "
                    "configure them under arches.<arch>.test_vendors"
                )
        seed = params.get("seed_sdk") or None
        if seed:
            try:
                parse_any(seed)
            except (VersionError, ValueError) as err:
                raise ValueError(f"seed_sdk: {err}") from None
    except (ValueError, VersionError, KeyError, TypeError) as err:
        raise AirflowFailException(f"invalid params: {err}") from None
    return {
        "ref": ref,
        "version": version,
        "build_id": build_id,
        "arches": arches,
        "formats": formats,
        "test_vendors": vendors,
        "force": bool(params.get("force")),
        "seed_sdk": seed,
    }


def resolve_build(config: Config, kind: BuildKind, branch: str, context: Mapping[str, Any]) -> dict:
    """The build plan of this run (XCom of the ``version`` task)."""
    dag_run = context["dag_run"]
    checked = _check_params(config, kind, context["params"])
    when = run_time(context.get("logical_date"), dag_run.run_after)
    run_type = str(getattr(dag_run.run_type, "value", dag_run.run_type))
    backfill = run_type == "backfill"
    repo = _repo(config)
    ref = checked["ref"]
    commit = None
    if backfill:
        # A backfilled nightly builds the branch as it was at its logical time, and never pushes it.
        commit = repo.commit_at(ref, when)
    if checked["version"] is not None:
        version: FlatcarVersion = checked["version"]
    else:
        version = nightly_version(repo, ref, kind, when, commit=commit)
        if checked["build_id"]:
            version = version.with_build_id(checked["build_id"])
    seed = None
    if kind is BuildKind.FULL:
        seed = checked["seed_sdk"] or (None if config.full.seed_sdk == "branch" else config.full.seed_sdk)
        if seed is None:
            with repo.locked():
                base = commit or repo.resolve(ref, repo.remote_refs()).commit
                repo.ensure_commit(base)
                seed = repo.read_versionfile(base).sdk.versionfile_version
    formats = {arch: list(checked["formats"] or config.arches[arch].formats) for arch in checked["arches"]}
    vendors = {
        arch: list(checked["test_vendors"] or config.arches[arch].test_vendors) for arch in checked["arches"]
    }
    return {
        "kind": kind.value,
        "branch": branch,
        "ref": ref,
        "commit": commit,
        "version": version.tag,
        "run_time": when.isoformat(),
        "run_type": run_type,
        "backfill": backfill,
        "seed_sdk": seed,
        "arches": checked["arches"],
        "formats": formats,
        "test_vendors": vendors,
        "force": checked["force"],
    }


def tag_build(config: Config, kind: BuildKind, plan: Mapping) -> dict:
    """Create or reuse the version tag; the nightly shortcut skips the build when nothing changed."""
    hook = BuildCacheHook(config.buildcache_conn_id)

    def outputs_exist(candidate: ShortcutCandidate) -> bool:
        if candidate.tag == plan["version"]:
            # This very version run again (a failed build rebuilt by hand): its images may exist while
            # its tests failed, so they do not say the build is done.
            return False
        vf = candidate.versionfile
        # The arches this run builds: a DAG configured for amd64 alone never has an arm64 image.
        refs = [generic_image(vf.os, arch) for arch in plan.get("arches") or ("amd64", "arm64")]
        if candidate.kind is BuildKind.FULL:
            refs.append(container("flatcar-sdk-all", vf.sdk))
        return all(entry.exists for entry in hook.check(ref.path for ref in refs).values())

    request = TagRequest(
        version=parse_tag(plan["version"]),
        ref=plan["ref"],
        kind=kind,
        commit=plan.get("commit"),
        force=bool(plan.get("force")),
        allow_branch_push=not plan.get("backfill"),
        outputs_exist=outputs_exist,
        identity=CIIdentity(config.ci_identity.name, config.ci_identity.email),
    )
    result = tag_version(_repo(config), request)
    if result.action == "skipped":
        raise AirflowSkipException(result.message)
    return {**dict(plan), **result.to_dict()}


_PREPARATION = ("branch_lock", "version", "tag")


def _step_tasks(context) -> list[str]:
    dag = context["dag"]
    return [task_id for task_id in dag.task_ids if task_id not in (*_PREPARATION, "summary")]


def summarize(config: Config, context: Mapping[str, Any]) -> dict:
    """The build manifest: version, commit, ref, run, steps (state, times, artifacts) per arch, tests."""
    ti = context["ti"]
    dag_run = context["dag_run"]
    states = {
        crumb["task_id"]: crumb
        for crumb in ti.get_task_breadcrumbs(dag_id=dag_run.dag_id, run_id=dag_run.run_id)
    }
    plan = ti.xcom_pull(task_ids="version") or {}
    build = ti.xcom_pull(task_ids="tag") or {}
    manifest: dict[str, Any] = {
        "version": build.get("tag") or plan.get("version"),
        "versionfile": build.get("versionfile"),
        "commit": build.get("commit"),
        "base_commit": build.get("base_commit"),
        "ref": plan.get("ref"),
        "branch": plan.get("branch"),
        "kind": plan.get("kind"),
        "dag_id": dag_run.dag_id,
        "run_id": dag_run.run_id,
        "run_type": plan.get("run_type"),
        "run_time": plan.get("run_time"),
        "started_at": dag_run.start_date.isoformat() if dag_run.start_date else None,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(),
        "tag": {
            "action": build.get("action"),
            "state": _state(states, "tag"),
            "message": build.get("message"),
        },
        "steps": {},
        "arches": {},
        "tests": {},
    }
    # The first failure named first: a failed lock, version or tag leaves every step upstream_failed.
    failed = [task_id for task_id in _PREPARATION if _state(states, task_id) == "failed"]
    for task_id in _step_tasks(context):
        record = ti.xcom_pull(task_ids=task_id) or {}
        state = _state(states, task_id)
        entry = {
            "state": state,
            "duration_s": (states.get(task_id) or {}).get("duration"),
            "started_at": record.get("started_at"),
            "finished_at": record.get("finished_at"),
            "reused": record.get("reused"),
            "artifacts": record.get("artifacts", []),
        }
        if state == "failed":
            # The cause the step recognised in its output (flatcar_airflow/failures.py), if it ran.
            cause = ti.xcom_pull(task_ids=task_id, key="failure")
            if isinstance(cause, dict):
                entry["failure"] = cause
        arch, _, step = task_id.rpartition(".")
        if arch:
            manifest["arches"].setdefault(arch, {})[step] = entry
        else:
            manifest["steps"][step] = entry
        tests = ti.xcom_pull(task_ids=task_id, key="tests")
        if tests:
            manifest["tests"].setdefault(arch, {})[step.removeprefix("test_")] = tests
        if state in ("failed", "upstream_failed"):
            failed.append(task_id)
    manifest["state"] = "failed" if failed else ("skipped" if not build else "success")
    run_type = plan.get("run_type") or str(getattr(dag_run.run_type, "value", dag_run.run_type))
    previous = None
    versionfile = build.get("versionfile")
    if versionfile:
        hook = BuildCacheHook(config.buildcache_conn_id)
        data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        written, paths = [], []
        built = BuildContext.from_build(build).os
        for arch in plan.get("arches", []):
            paths.append(image_file(built, arch, MANIFEST_NAME).path)
            written.append(hook.upload(paths[-1], data))
        manifest["manifest_urls"] = written
        # Before the index update, which puts this build in: the branch's previous build (only when a
        # recovery notice may be due; never raises).
        previous = previous_build(config, hook, manifest, paths, run_type)
        # After the manifests: a failed index update only warns (docs/builds-index.md).
        manifest["builds_index"] = update_index(hook, json.loads(data), paths)
    if config.notifications.smtp_conn_id:
        roots = [task_id for task_id in failed if _state(states, task_id) == "failed"]
        notice = make_notice(
            config, manifest, roots, run_type, previous, dag_id=dag_run.dag_id, run_id=dag_run.run_id
        )
        ti.xcom_push(key="notice", value=notice)
    if failed:
        ti.xcom_push(key="return_value", value=manifest)
        raise AirflowFailException(failure_message(manifest, failed, states))
    return manifest


def failure_message(manifest: Mapping[str, Any], failed: list[str], states: Mapping) -> str:
    """``build of <tag> failed: <root> (<cause>), …; N tasks not run because of it: …``.

    The root failures (tasks that failed) come first with their causes; what they blocked
    (upstream_failed) is counted and listed after, so the first line says what to look at.
    """
    roots = [task_id for task_id in failed if _state(states, task_id) == "failed"]
    blocked = [task_id for task_id in failed if task_id not in roots]
    causes = []
    for task_id in roots:
        arch, _, step = task_id.rpartition(".")
        record = (manifest["arches"].get(arch) or {}).get(step) if arch else manifest["steps"].get(step)
        cause = ((record or {}).get("failure") or {}).get("summary")
        causes.append(f"{task_id} ({cause})" if cause else task_id)
    message = f"build of {manifest['version']} failed: {', '.join(causes) or 'nothing failed itself'}"
    if blocked:
        shown = ", ".join(blocked[:8]) + (f" and {len(blocked) - 8} more" if len(blocked) > 8 else "")
        message += f"; {len(blocked)} task{'s' if len(blocked) != 1 else ''} not run because of it: {shown}"
    return message


def _state(states: Mapping, task_id: str) -> str | None:
    crumb = states.get(task_id)
    if crumb is None:
        return None
    state = crumb.get("state")
    return str(getattr(state, "value", state)) if state is not None else None
