"""One garbage collection: gather the inputs, decide, report, run the scripts' ``garbage_collect``, verify.

The same code runs in the ``flatcar_buildcache_gc`` DAG's task and in ``flatcar-airflow gc``. What runs
where:

* inputs: the scripts origin's tags (``git ls-remote``), the builds index of every branch
  (:mod:`flatcar_airflow.buildindex`), the versions queued or running DAG runs reference (given by the
  caller: the task reads them through Airflow's execution API, :func:`in_use_from_task`), the pins;
* :func:`flatcar_airflow.retention.policy.decide`;
* the report: per purged version the cache paths the scripts remove and their bytes, the tags to
  delete, the orphan directories the scripts' sweep removes (HTTPS listings, :mod:`.listing`);
* the scripts' own ``garbage_collect KEEP MIN_AGE_DAYS`` with ``PURGE_VERSIONS`` (and ``DRY_RUN=y``
  unless applying), through the configured runner like every step; skipped when nothing is to be purged
  (an empty ``PURGE_VERSIONS`` would make the scripts choose by their own rules);
* after applying: every purged tag is gone from the origin and every reported path from the cache,
  or the collection fails naming what is left.

Re-running is safe: the scripts remove a version's paths before its tag, skip a version whose tag is
gone, and their orphan sweep removes what an interrupted run left; the policy is computed afresh.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..buildindex.entries import INDEX_DIR, branch_from_file_name
from .listing import SWEPT, CacheReader, version_patterns
from .policy import Build, build_of, decide, orphans, protected_orphans

if TYPE_CHECKING:
    from ..config import Config
    from ..hooks.buildcache import BuildCacheHook

__all__ = [
    "REPORT_KIND",
    "REPORT_PATH",
    "GarbageCollectStep",
    "collect",
    "in_use_from_task",
    "known_builds",
]

log = logging.getLogger(__name__)

REPORT_KIND = "flatcar-airflow-gc-report"
#: The last collection's report in the build cache (the builds page shows it).
REPORT_PATH = "flatcar-airflow/gc/report.json"
_ACTIVE = frozenset({"queued", "running"})
_FINISHED = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})


@dataclass(frozen=True)
class GarbageCollectStep:
    """``ci-automation/garbage_collect.sh``: ``garbage_collect [KEEP] [MIN_AGE_DAYS]`` with
    ``PURGE_VERSIONS`` and ``DRY_RUN`` (the steps of :mod:`flatcar_airflow.steps`, for the cache)."""

    name = "garbage_collect"
    script = "ci-automation/garbage_collect.sh"
    function = "garbage_collect"

    def args(self, keep: int, min_age_days: int) -> list[str]:
        return [str(int(keep)), str(int(min_age_days))]

    def env(self, purge: Iterable[str], apply: bool) -> dict[str, str]:
        env = {"PURGE_VERSIONS": " ".join(purge)}
        if not apply:
            env["DRY_RUN"] = "y"
        return env


def supported_branches(config: Config) -> list[str]:
    return ([config.full.branch] if config.full.enabled else []) + list(config.os.branches)


def build_dag_ids(config: Config) -> list[str]:
    from ..pipelines import FULL_DAG_ID, os_dag_id

    return ([FULL_DAG_ID] if config.full.enabled else []) + [os_dag_id(b) for b in config.os.branches]


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def known_builds(hook: BuildCacheHook, reader: CacheReader, branches: Iterable[str]) -> dict[str, Build]:
    """Every build of every branch's index (the configured branches and those with an index file)."""
    from ..buildindex.store import read_index

    names = set(branches)
    for file_name in reader.listing(INDEX_DIR)[1]:
        try:
            names.add(branch_from_file_name(file_name))
        except ValueError:
            continue
    builds: dict[str, Build] = {}
    for branch in sorted(names):
        for entry in read_index(hook, branch).entries:
            tag = entry.get("version_tag")
            if not isinstance(tag, str) or tag in builds:
                continue  # newest first: the first entry of a tag is its latest build
            builds[tag] = Build(
                tag=tag,
                branch=entry.get("branch") or branch,
                created=_time(entry.get("started_at")) or _time(entry.get("run_time")),
                version=entry.get("version"),
                sdk_version=entry.get("sdk_version"),
                successful_nightly=entry.get("run_type") == "scheduled" and entry.get("state") == "success",
            )
    return builds


def in_use_from_task(ti: Any, dag_ids: Iterable[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Tags and version numbers of the queued and running runs of the build DAGs (execution API)."""
    tags: dict[str, str] = {}
    versions: dict[str, str] = {}
    for dag_id in dag_ids:
        states = ti.get_task_states(dag_id=dag_id, task_ids=["version", "tag", "summary"])
        for run_id, tasks in states.items():
            # A finished summary (the last task, all_done) ends a run: no state request per old run.
            if (tasks or {}).get("summary") in _FINISHED:
                continue
            if ti.get_dagrun_state(dag_id=dag_id, run_id=run_id) not in _ACTIVE:
                continue
            who = f"{dag_id} run {run_id}"
            plan = ti.xcom_pull(dag_id=dag_id, run_id=run_id, task_ids="version")
            build = ti.xcom_pull(dag_id=dag_id, run_id=run_id, task_ids="tag")
            plan = plan if isinstance(plan, Mapping) else {}
            build = build if isinstance(build, Mapping) else {}
            for tag in (plan.get("version"), build.get("tag")):
                if isinstance(tag, str) and tag:
                    tags.setdefault(tag, who)
            versionfile = build.get("versionfile") if isinstance(build.get("versionfile"), Mapping) else {}
            for key in ("FLATCAR_VERSION", "FLATCAR_SDK_VERSION"):
                if isinstance(versionfile.get(key), str):
                    versions.setdefault(versionfile[key], who)
    return tags, versions


def origin_tags(config: Config) -> list[str]:
    from ..scripts_repo import ScriptsRepo

    repo = ScriptsRepo(
        config.scripts_repo, cache_dir=Path(config.tagging_cache) if config.tagging_cache else None
    )
    with repo.locked():
        return sorted(repo.remote_refs().tags)


def make_report(
    config: Config,
    hook: BuildCacheHook,
    *,
    tags: Iterable[str],
    in_use: Mapping[str, str],
    in_use_versions: Mapping[str, str],
    now: dt.datetime,
    keep: int,
    min_age_days: int,
    apply: bool,
) -> dict[str, Any]:
    """The report of one collection (nothing is changed): what goes, with paths and bytes, and why the
    rest stays."""
    tags = sorted(set(tags))
    with hook.get_conn() as client:
        reader = CacheReader(hook, client)
        known = known_builds(hook, reader, supported_branches(config))
        decision = decide(
            tags,
            known,
            keep=keep,
            min_age_days=min_age_days,
            now=now,
            pinned=config.retention.pinned,
            in_use=in_use,
            in_use_versions=in_use_versions,
            supported_branches=supported_branches(config),
        )
        purged: list[dict[str, Any]] = []
        for tag in decision.purge:
            build = known.get(tag)
            version = build_of(tag, known).version
            if not version:  # never: a development tag always has a version number
                raise RuntimeError(f"no version number for {tag}: refusing to report or remove its paths")
            paths = [
                {"path": path, "bytes": size}
                for pattern in version_patterns(version)
                for path, size in reader.expand(pattern)
            ]
            purged.append(
                {
                    "tag": tag,
                    "version": version,
                    "branch": build.branch if build else None,
                    "paths": paths,
                    "bytes": sum(p["bytes"] for p in paths),
                }
            )
        remaining = [tag for tag in tags if tag not in set(decision.purge)]
        purged_paths = {p["path"] for entry in purged for p in entry["paths"]}
        swept: list[dict[str, Any]] = []
        for area in SWEPT:
            names = [
                n
                for n in reader.names(area)
                if not (area == "containers" and "-github-" in n.replace("+", "-"))
            ]
            for name in orphans(names, remaining):
                path = f"{area}/{name}"
                if path not in purged_paths:
                    swept.append({"path": path, "bytes": reader.bytes_under(path)})
    protected: dict[str, str] = {}
    for tag, why in decision.kept.items():
        build = build_of(tag, known)
        for version in (build.version, build.sdk_version):
            if version:
                protected.setdefault(version, f"kept: {tag} ({why})")
    for version, who in in_use_versions.items():
        protected.setdefault(version, f"in use by {who}")
    refusals = decision.refusals + protected_orphans([s["path"].rsplit("/", 1)[1] for s in swept], protected)
    total = sum(e["bytes"] for e in purged) + sum(s["bytes"] for s in swept)
    return {
        "kind": REPORT_KIND,
        "generated_at": now.isoformat(timespec="seconds"),
        "dry_run": not apply,
        "keep": keep,
        "min_age_days": min_age_days,
        "purge": purged,
        "tags_to_delete": [e["tag"] for e in purged],
        "orphans": swept,
        "bytes_freed": total,
        "kept": decision.kept,
        "pinned": list(config.retention.pinned),
        "in_use": {**dict(in_use), **{v: w for v, w in in_use_versions.items()}},
        "refusals": refusals,
    }


def log_report(report: Mapping[str, Any], say: Callable[[str], None]) -> None:
    mode = "dry run: nothing is removed" if report["dry_run"] else "applying"
    say(
        f"Garbage collection ({mode}): {len(report['purge'])} version(s) to purge, "
        f"{len(report['orphans'])} orphan directory(ies), {report['bytes_freed']} bytes to free"
    )
    for entry in report["purge"]:
        say(f"  purge {entry['tag']} ({entry['version']}, {entry['bytes']} bytes; its tag is deleted)")
        for path in entry["paths"]:
            say(f"    {path['path']} ({path['bytes']} bytes)")
    for orphan in report["orphans"]:
        say(f"  orphan {orphan['path']} ({orphan['bytes']} bytes)")
    for tag, why in sorted(report["kept"].items()):
        say(f"  keep {tag}: {why}")
    for refusal in report["refusals"]:
        say(f"  REFUSED: {refusal}")


def run_scripts_gc(
    config: Config,
    hook: BuildCacheHook,
    report: Mapping[str, Any],
    *,
    key: str,
    attempt: int,
    on_line: Callable[[str], None],
    runner_factory: Callable[[], Any] | None = None,
) -> int:
    """``garbage_collect`` of the scripts, through the configured runner; returns its exit status."""
    from ..runners import Job, make_runner

    step = GarbageCollectStep()
    settings = hook.settings
    files, cache = settings.job_access()
    env = {
        **settings.step_environment(),
        **{str(k): str(v) for k, v in config.step_env.items()},
        "ARCH": "amd64",
        **step.env(report["tags_to_delete"], not report["dry_run"]),
    }
    job = Job(
        key=key,
        attempt=attempt,
        origin=config.scripts_repo,
        ref=config.retention.ref or config.full.branch,
        script=step.script,
        function=step.function,
        args=step.args(report["keep"], report["min_age_days"]),
        env=env,
        files=files,
        cache=cache,
    )
    job.secret_env = _secret_env(config, hook)
    runner = runner_factory() if runner_factory else make_runner(config.runner)
    outcome = runner.run(job, on_line, lambda: None)
    return outcome.rc


def _secret_env(config: Config, hook: BuildCacheHook) -> dict[str, str]:
    """``secrets_conn_id``'s variables (the real collector's cloud credentials), masked in the logs."""
    if not config.secrets_conn_id:
        return {}
    import re

    from airflow.sdk.log import mask_secret

    from ..runners.base import JOB_NAMESPACE

    secret_env: dict[str, str] = {}
    for name, value in type(hook).get_connection(config.secrets_conn_id).extra_dejson.items():
        mask_secret(str(value))
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name)) or str(name).startswith(JOB_NAMESPACE):
            raise ValueError(
                f"secrets connection {config.secrets_conn_id!r}: variable {str(name)[:60]!r} is not allowed "
                f"(a shell variable name, not in the wrapper's {JOB_NAMESPACE}* namespace)"
            )
        secret_env[str(name)] = str(value)
    return secret_env


def verify(config: Config, hook: BuildCacheHook, report: Mapping[str, Any]) -> list[str]:
    """What an applied collection left that it should have removed: tags on the origin, cache paths."""
    left = [f"tag {tag}" for tag in set(report["tags_to_delete"]) & set(origin_tags(config))]
    paths = [p["path"] for entry in report["purge"] for p in entry["paths"]]
    paths += [o["path"] for o in report["orphans"]]
    with hook.get_conn() as client:
        reader = CacheReader(hook, client)
        for path in paths:
            parent, _, name = path.rpartition("/")
            directories, files = reader.listing(parent)
            if name in directories or name in files:
                left.append(f"path {path}")
    return left


def store_report(hook: BuildCacheHook, report: Mapping[str, Any]) -> str:
    return hook.upload(REPORT_PATH, json.dumps(report, indent=1, sort_keys=True).encode() + b"\n")


def collect(
    config: Config,
    hook: BuildCacheHook,
    *,
    apply: bool,
    in_use: Mapping[str, str],
    in_use_versions: Mapping[str, str],
    key: str,
    attempt: int = 1,
    say: Callable[[str], None] = log.info,
    on_line: Callable[[str], None] | None = None,
    keep: int | None = None,
    min_age_days: int | None = None,
    now: dt.datetime | None = None,
    runner_factory: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """A whole collection (see the module docstring); returns the report (also stored in the cache).

    Raises RuntimeError naming the cause when applying is refused, the scripts fail, or something that
    should be gone is left.
    """
    retention = config.retention
    report = make_report(
        config,
        hook,
        tags=origin_tags(config),
        in_use=in_use,
        in_use_versions=in_use_versions,
        now=now or dt.datetime.now(dt.UTC),
        keep=retention.keep if keep is None else keep,
        min_age_days=retention.min_age_days if min_age_days is None else min_age_days,
        apply=apply,
    )
    log_report(report, say)
    if apply and report["refusals"]:
        report["result"] = "refused"
        store_report(hook, report)
        raise RuntimeError("garbage collection refused: " + "; ".join(report["refusals"]))
    if not report["tags_to_delete"]:
        say(
            "Nothing to purge: the scripts' garbage_collect does not run "
            "(its orphan sweep runs with the next purge)"
        )
        report["result"] = "nothing to purge"
    else:
        rc = run_scripts_gc(
            config,
            hook,
            report,
            key=key,
            attempt=attempt,
            on_line=on_line or say,
            runner_factory=runner_factory,
        )
        if rc != 0:
            report["result"] = f"garbage_collect failed (exit {rc})"
            store_report(hook, report)
            raise RuntimeError(
                f"the scripts' garbage_collect failed with exit status {rc} (see its output above)"
            )
        if apply:
            left = verify(config, hook, report)
            if left:
                report["result"] = "incomplete"
                store_report(hook, report)
                raise RuntimeError("garbage collection left what it removes: " + ", ".join(left))
        report["result"] = "applied" if apply else "dry run"
    report["url"] = store_report(hook, report)
    return report
