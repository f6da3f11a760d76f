"""What each page shows, from index entries and manifests (pure functions: data in, data out).

INPUTS:  index entries (docs/builds-index.md) and manifests (docs/pipelines.md), a :class:`Links` saying
         where Airflow's UI, this app and the build cache are, and the configuration's link templates.
OUTPUTS: plain dicts and lists for the templates and the JSON API.

Kept apart from the routes so the same rows feed the HTML page and the API, and so what a page shows is
tested without a server. Nothing here reads the network: the routes hand in what :mod:`.source` read.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from ..buildindex.entries import _time
from .svg import human_duration

__all__ = [
    "FILTERS",
    "Links",
    "api_entry",
    "build_detail",
    "filter_entries",
    "group_rows",
    "list_row",
    "paginate",
    "step_order",
    "trends",
]

#: The list's filters and the values each accepts (anything else is refused with a 422 naming it).
FILTERS = {
    "state": ("success", "failed"),
    "run_type": ("scheduled", "manual", "backfill"),
}
_ORDER = ("preflight", "tag", "sdk_bootstrap", "sdk_container", "packages_tag", "packages",
          "push_packages", "image", "sbsign", "vms")  # fmt: skip
_TAIL = ("image_changes",)


@dataclass(frozen=True)
class Links:
    """Where things are, for the links a page shows.

    ``ui_root`` is the path of Airflow's UI (``""`` or ``/airflow`` behind a path prefix), ``app_root``
    this app's (``<ui_root>/flatcar``); ``cache_url`` maps a cache path to its public HTTPS URL;
    ``web_link(what, **fields)`` is the configuration's ``web.<what>`` filled in (None when off).
    """

    ui_root: str
    app_root: str
    cache_url: Callable[[str], str]
    web_link: Callable[..., str | None]

    def build(self, tag: str) -> str:
        return f"{self.app_root}/builds/{quote(tag, safe='')}"

    def branch(self, branch: str) -> str:
        return f"{self.app_root}/branches/{quote(branch, safe='/')}"

    def run(self, dag_id: str | None, run_id: str | None) -> str | None:
        if not dag_id or not run_id:
            return None
        return f"{self.ui_root}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"

    def task_log(self, dag_id: str | None, run_id: str | None, task_id: str) -> str | None:
        run = self.run(dag_id, run_id)
        return f"{run}/tasks/{quote(task_id, safe='')}" if run else None

    def listing(self, **params: Any) -> str:
        query = urlencode({key: value for key, value in params.items() if value not in (None, "", 1)})
        return f"{self.app_root}/" + (f"?{query}" if query else "")


def step_order(name: str) -> tuple[int, str]:
    """The order of steps in a build: preparation, SDK, packages, image, vendor images, tests, report."""
    if name in _ORDER:
        return _ORDER.index(name), name
    if name.startswith("test_"):
        return len(_ORDER), name
    if name in _TAIL:
        return len(_ORDER) + 1 + _TAIL.index(name), name
    return len(_ORDER) + 1 + len(_TAIL), name


def filter_entries(
    entries: Iterable[Mapping[str, Any]],
    *,
    branch: str | None = None,
    state: str | None = None,
    run_type: str | None = None,
    channel: str | None = None,
    dag_ids: set[str | None] | None = None,
) -> list[Mapping[str, Any]]:
    """The entries matching every filter given; ``dag_ids`` are the DAGs the user may read."""
    return [
        entry
        for entry in entries
        if (branch is None or entry.get("branch") == branch)
        and (state is None or entry.get("state") == state)
        and (run_type is None or entry.get("run_type") == run_type)
        and (channel is None or entry.get("channel") == channel)
        and (dag_ids is None or entry.get("dag_id") in dag_ids)
    ]


def paginate(items: Sequence[Any], page: int, size: int) -> tuple[Sequence[Any], int, int]:
    """``(items of the page, page, pages)``; a page past the end is the last page."""
    pages = max(1, math.ceil(len(items) / size))
    page = min(max(page, 1), pages)
    return items[(page - 1) * size : page * size], page, pages


def _short(commit: Any) -> str | None:
    return commit[:12] if isinstance(commit, str) and commit else None


def _arch_dirs(entry: Mapping[str, Any]) -> dict[str, str]:
    """``{arch: images/<arch>/<VER>/}`` from the paths of the entry's manifests."""
    dirs = {}
    for path in entry.get("manifests") or []:
        parts = path.split("/")
        if len(parts) >= 4 and parts[0] == "images":
            dirs[parts[1]] = posixpath.dirname(path) + "/"
    return dirs


def _duration(entry: Mapping[str, Any]) -> float | None:
    start, end = entry.get("started_at"), entry.get("finished_at")
    if not start or not end:
        return None
    seconds = (_time(end) - _time(start)).total_seconds()
    return seconds if seconds >= 0 else None


_SHORT = {
    "preflight": "checks",
    "tag": "tag",
    "sdk_bootstrap": "sdk boot",
    "sdk_container": "sdk",
    "packages_tag": "pkg tag",
    "packages": "pkgs",
    "push_packages": "push",
    "image": "image",
    "sbsign": "sign",
    "vms": "vms",
    "image_changes": "changes",
}


def short_step(step: str) -> str:
    """A column heading: ``pkgs``, ``test qemu_uefi``."""
    return _SHORT.get(step) or ("test " + step.removeprefix("test_") if step.startswith("test_") else step)


def _cells(entry: Mapping[str, Any], links: Links) -> tuple[list[str], list[tuple[str, list[dict | None]]]]:
    """The state matrix: its columns (steps, build order) and a row per arch ("" for the steps of no
    arch), each cell aligned to the columns (None where that row has no such step)."""
    dag_id, run_id = entry.get("dag_id"), entry.get("run_id")
    durations = entry.get("durations") or {}
    failures = entry.get("failures") or {}

    def cell(step: str, arch: str, state: Any) -> dict:
        task_id = f"{arch}.{step}" if arch else step
        return {
            "step": step,
            "arch": arch,
            "task_id": task_id,
            "state": state if isinstance(state, str) else "none",
            "log_url": links.task_log(dag_id, run_id, task_id),
            "duration": human_duration(durations.get(task_id)) if task_id in durations else None,
            "cause": failures.get(task_id),
        }

    rows: list[tuple[str, dict[str, Any]]] = []
    if entry.get("steps"):
        rows.append(("", dict(entry["steps"])))
    for arch, records in sorted((entry.get("arches") or {}).items()):
        if isinstance(records, Mapping):
            rows.append((arch, dict(records)))
    columns = sorted({step for _, records in rows for step in records}, key=step_order)
    return columns, [
        (arch, [cell(step, arch, records[step]) if step in records else None for step in columns])
        for arch, records in rows
    ]


def _tests(entry: Mapping[str, Any]) -> list[dict]:
    rows = []
    for arch, vendors in sorted((entry.get("tests") or {}).items()):
        if not isinstance(vendors, Mapping):
            continue
        for vendor, counts in sorted(vendors.items()):
            counts = counts if isinstance(counts, Mapping) else {}
            rows.append(
                {
                    "arch": arch,
                    "vendor": vendor,
                    **{key: int(counts.get(key) or 0) for key in ("passed", "failed", "skipped", "flaky")},
                }
            )
    return rows


def list_row(entry: Mapping[str, Any], links: Links) -> dict[str, Any]:
    """One build as the list shows it."""
    tag = str(entry.get("version_tag"))
    columns, matrix = _cells(entry, links)
    return {
        "tag": tag,
        "url": links.build(tag),
        "branch": entry.get("branch"),
        "channel": entry.get("channel"),
        "kind": entry.get("kind"),
        "version": entry.get("version"),
        "state": entry.get("state") or "none",
        "run_type": entry.get("run_type"),
        "run_time": entry.get("run_time"),
        "finished_at": entry.get("finished_at"),
        "duration": human_duration(_duration(entry)),
        "commit": _short(entry.get("commit")),
        "commit_url": links.web_link("commit_url", commit=entry.get("commit")),
        "tag_url": links.web_link("tag_url", tag=tag),
        "run_url": links.run(entry.get("dag_id"), entry.get("run_id")),
        "failures": dict(entry.get("failures") or {}),
        "columns": [{"step": step, "label": short_step(step)} for step in columns],
        "matrix": matrix,
        "tests": _tests(entry),
        "artifacts": [
            {"arch": arch, "url": links.cache_url(path)} for arch, path in sorted(_arch_dirs(entry).items())
        ],
    }


def group_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows grouped by branch and channel, in the order they come (newest first within a group)."""
    groups: dict[tuple[Any, Any], dict[str, Any]] = {}
    for row in rows:
        key = (row["branch"], row["channel"])
        groups.setdefault(key, {"branch": key[0], "channel": key[1], "rows": []})["rows"].append(row)
    return list(groups.values())


def api_entry(entry: Mapping[str, Any], links: Links) -> dict[str, Any]:
    """An index entry for the JSON API, with the links the page would show."""
    tag = str(entry.get("version_tag"))
    return {
        **entry,
        "links": {
            "page": links.build(tag),
            "run": links.run(entry.get("dag_id"), entry.get("run_id")),
            "commit": links.web_link("commit_url", commit=entry.get("commit")),
            "tag": links.web_link("tag_url", tag=tag),
            "artifacts": {arch: links.cache_url(path) for arch, path in sorted(_arch_dirs(entry).items())},
            "manifests": [links.cache_url(path) for path in entry.get("manifests") or []],
        },
    }


def _records(manifest: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    """``(task id, arch, record)`` of every step in a manifest, in build order."""
    found = []
    for step, record in (manifest.get("steps") or {}).items():
        if isinstance(record, Mapping):
            found.append((step, "", step, record))
    for arch, records in (manifest.get("arches") or {}).items():
        if isinstance(records, Mapping):
            for step, record in records.items():
                if isinstance(record, Mapping):
                    found.append((f"{arch}.{step}", arch, step, record))
    found.sort(key=lambda item: (item[1], step_order(item[2])))
    return [(task_id, arch, record) for task_id, arch, _, record in found]


def _human_size(size: Any) -> str:
    if not isinstance(size, int) or isinstance(size, bool):
        return "—"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


_DIGEST = re.compile(r"^(sha256:)?[0-9a-f]{12,}$")


def _digest(artifact: Mapping[str, Any]) -> str | None:
    extra = artifact.get("extra") if isinstance(artifact.get("extra"), Mapping) else {}
    for value in (artifact.get("digest"), extra.get("sha256"), extra.get("digest"), artifact.get("image_id")):
        if isinstance(value, str) and _DIGEST.fullmatch(value):
            return value
    return None


def build_detail(
    entry: Mapping[str, Any],
    manifest: Mapping[str, Any] | None,
    previous: Mapping[str, Any] | None,
    previous_manifest: Mapping[str, Any] | None,
    links: Links,
    reports: Mapping[str, str] | None = None,
    digests: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """A build's own page: the row, its artifacts, steps, tests, reports and the comparison.

    ``digests`` are the SHA-512s read from the artifacts' ``.DIGESTS`` files (by path); an artifact
    without one shows the digest its record has (a container's image id), if any.
    """
    digests = digests or {}
    row = list_row(entry, links)
    manifest = manifest or {}
    artifacts, steps, seen = [], [], set()
    for task_id, arch, record in _records(manifest):
        steps.append(
            {
                "task_id": task_id,
                "arch": arch,
                "state": record.get("state") or "none",
                "seconds": record.get("duration_s"),
                "duration": human_duration(record.get("duration_s")),
                "reused": bool(record.get("reused")),
                "cause": (record.get("failure") or {}).get("summary")
                if isinstance(record.get("failure"), Mapping)
                else None,
                "log_url": links.task_log(entry.get("dag_id"), entry.get("run_id"), task_id),
            }
        )
        for artifact in record.get("artifacts") or []:
            if not isinstance(artifact, Mapping) or not isinstance(artifact.get("path"), str):
                continue
            if artifact["path"] in seen:
                continue
            seen.add(artifact["path"])
            artifacts.append(
                {
                    "task_id": task_id,
                    "kind": artifact.get("kind"),
                    "arch": artifact.get("arch") or arch,
                    "path": artifact["path"],
                    "name": posixpath.basename(artifact["path"]),
                    "directory": posixpath.dirname(artifact["path"]) + "/",
                    "url": links.cache_url(artifact["path"]),
                    "size": _human_size(artifact.get("size")),
                    "bytes": artifact.get("size"),
                    "sha512": digests.get(artifact["path"]),
                    "digests_url": links.cache_url(artifact["path"] + ".DIGESTS")
                    if digests.get(artifact["path"])
                    else None,
                    "digest": _digest(artifact),
                }
            )
    tag_record = manifest.get("tag")
    tests = []
    for arch, vendors in sorted((manifest.get("tests") or {}).items()):
        for vendor, summary in sorted((vendors or {}).items()):
            summary = summary if isinstance(summary, Mapping) else {}
            tests.append(
                {
                    "arch": arch,
                    "vendor": vendor,
                    **{key: int(summary.get(key) or 0) for key in ("passed", "failed", "skipped", "flaky")},
                    "failures": [str(name) for name in summary.get("failures") or []],
                    "flaky_tests": [str(name) for name in summary.get("flaky_tests") or []],
                }
            )
    return {
        **row,
        "sdk_version": entry.get("sdk_version"),
        "ref": entry.get("ref"),
        "started_at": entry.get("started_at"),
        "tag_action": tag_record.get("action") if isinstance(manifest.get("tag"), Mapping) else None,
        "manifest_found": bool(manifest),
        # What flatcar_release published (docs/release.md): offers, time, the release's DAG run.
        "released": entry.get("released") if isinstance(entry.get("released"), Mapping) else None,
        "manifest_urls": [links.cache_url(path) for path in entry.get("manifests") or []],
        "artifacts_list": artifacts,
        "steps": steps,
        "tests_detail": tests,
        "reports": dict(sorted((reports or {}).items())),
        "compare": _compare(entry, manifest, previous, previous_manifest or {}, links) if previous else None,
    }


def _compare(
    entry: Mapping[str, Any],
    manifest: Mapping[str, Any],
    previous: Mapping[str, Any],
    previous_manifest: Mapping[str, Any],
    links: Links,
) -> dict[str, Any]:
    """What changed since the branch's previous build: commits, step durations, tests."""
    old = {task_id: record for task_id, _, record in _records(previous_manifest)}
    durations = []
    for task_id, _, record in _records(manifest):
        before, now = (old.get(task_id) or {}).get("duration_s"), record.get("duration_s")
        change = None
        if isinstance(before, (int, float)) and isinstance(now, (int, float)) and before > 0:
            change = (now - before) / before
        durations.append(
            {
                "task_id": task_id,
                "before": human_duration(before),
                "now": human_duration(now),
                "change": None if change is None else f"{change:+.0%}",
                "slower": change is not None and change > 0.2,
            }
        )
    tests = []
    previous_tests = previous_manifest.get("tests") or {}
    for arch, vendors in sorted((manifest.get("tests") or {}).items()):
        for vendor, summary in sorted((vendors or {}).items()):
            before = (previous_tests.get(arch) or {}).get(vendor) or {}
            failing = set(summary.get("failures") or [])
            failed_before = set(before.get("failures") or [])
            tests.append(
                {
                    "arch": arch,
                    "vendor": vendor,
                    "before": f"{before.get('passed', 0)} passed, {before.get('failed', 0)} failed"
                    if before
                    else "—",
                    "now": f"{summary.get('passed', 0)} passed, {summary.get('failed', 0)} failed",
                    "newly_failing": sorted(failing - failed_before),
                    "fixed": sorted(failed_before - failing),
                }
            )
    old_commit, new_commit = previous.get("commit"), entry.get("commit")
    return {
        "tag": previous.get("version_tag"),
        "url": links.build(str(previous.get("version_tag"))),
        "state": previous.get("state"),
        "old_commit": _short(old_commit),
        "new_commit": _short(new_commit),
        "same_commit": bool(old_commit) and old_commit == new_commit,
        "commits_url": links.web_link("compare_url", old=old_commit, new=new_commit)
        if old_commit != new_commit
        else None,
        "durations": durations,
        "tests": tests,
    }


def trends(entries: Sequence[Mapping[str, Any]], count: int) -> dict[str, Any]:
    """A branch's last ``count`` builds oldest first: step durations per task and the builds' states.

    ``nightly`` is the success rate of scheduled builds only (what the branch's health is judged by);
    manual and backfill builds are drawn but not counted in it.
    """
    chosen = list(reversed(entries[:count]))
    tags = [str(entry.get("version_tag")) for entry in chosen]
    names: set[str] = set()
    for entry in chosen:
        names.update((entry.get("durations") or {}).keys())

    def order(task_id: str) -> tuple:
        arch, _, step = task_id.rpartition(".")
        return (arch, step_order(step))

    series = {
        name: [(entry.get("durations") or {}).get(name) for entry in chosen]
        for name in sorted(names, key=order)
    }
    nightlies = [entry for entry in chosen if entry.get("run_type") == "scheduled"]
    done = [entry for entry in nightlies if entry.get("state") in ("success", "failed")]
    rate = sum(entry.get("state") == "success" for entry in done) / len(done) if done else None
    return {
        "tags": tags,
        "series": series,
        "states": [(str(entry.get("version_tag")), entry.get("state")) for entry in chosen],
        "nightlies": [(str(entry.get("version_tag")), entry.get("state")) for entry in nightlies],
        "nightly_rate": rate,
        "nightly_count": len(done),
    }


def artifact_paths(manifest: Mapping[str, Any] | None) -> list[str]:
    """Every artifact path a manifest records (for reading their digests)."""
    return [
        artifact["path"]
        for _, _, record in _records(manifest or {})
        for artifact in record.get("artifacts") or []
        if isinstance(artifact, Mapping) and isinstance(artifact.get("path"), str)
    ]
