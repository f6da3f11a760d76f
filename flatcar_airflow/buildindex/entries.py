"""The builds index's content: its path, one entry per build, merge, parse and render (pure functions).

INPUTS:  build manifests (the JSON the summary task writes next to the images, as dicts) and their cache
         paths; the current index file's text.
OUTPUTS: index entries (small dicts) and the index file's bytes.

Why pure: the summary task and ``flatcar-airflow index rebuild`` must produce the *same* entries from the
same manifests (a rebuilt index equals the one the summaries wrote), and both must treat a bad index the
same way. Everything here takes data and returns data; reading and writing the cache is
:mod:`flatcar_airflow.buildindex.store`'s.

The file (docs/builds-index.md)::

    {"kind": "flatcar-airflow-builds-index", "schema_version": 1, "branch": "flatcar-4593",
     "max_entries": 1000, "updated_at": "…", "builds": [<entry>, …]}        # newest first

An entry is :func:`entry_from_manifest`'s result.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

__all__ = [
    "INDEX_DIR",
    "INDEX_KIND",
    "MAX_ENTRIES",
    "SCHEMA_VERSION",
    "CorruptIndex",
    "NewerIndex",
    "branch_from_file_name",
    "entries_from_manifests",
    "entry_from_manifest",
    "index_file_name",
    "index_path",
    "manifest_branch",
    "merge",
    "parse_index",
    "render_index",
    "sort_entries",
]

#: The index files' directory in the build cache (next to nothing the scripts write).
INDEX_DIR = "flatcar-airflow/builds"
INDEX_KIND = "flatcar-airflow-builds-index"
#: Bumped when an entry or the file changes incompatibly; readers refuse other versions.
SCHEMA_VERSION = 1
#: The newest builds an index keeps; older ones stay reachable through their manifests.
MAX_ENTRIES = 1000

# A branch name as check_ref_name allows it (letters, digits, '.', '_', '/', '-'); ',' never occurs in one,
# so '/' -> ',' is reversible and the file name stays one path segment the cache's write key accepts.
_BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
_COUNTS = ("passed", "failed", "skipped", "flaky")
_OLDEST = dt.datetime.min.replace(tzinfo=dt.UTC)


class CorruptIndex(ValueError):
    """The index file is not an index of this schema (invalid JSON, wrong shape, another branch's)."""


class NewerIndex(ValueError):
    """The index was written with a newer schema: leave it alone rather than overwrite what we cannot read."""


def index_file_name(branch: str) -> str:
    """``<branch>.json`` with every ``/`` as ``,`` (``lts/3033`` -> ``lts,3033.json``)."""
    if not isinstance(branch, str) or not _BRANCH.fullmatch(branch):
        raise ValueError(
            f"branch {branch!r} must be a branch name: letters, digits, '.', '_', '/' and '-', "
            "starting with a letter or digit"
        )
    if ".." in branch or "//" in branch or "/." in branch or branch.endswith(("/", ".", ".lock")):
        raise ValueError(
            f"branch {branch!r} is not a valid git branch name ('..', '//', '/.' or a bad ending)"
        )
    return branch.replace("/", ",") + ".json"


def branch_from_file_name(name: str) -> str:
    """The inverse of :func:`index_file_name`."""
    if not name.endswith(".json"):
        raise ValueError(f"{name!r} is not an index file name (<branch>.json)")
    branch = name.removesuffix(".json").replace(",", "/")
    index_file_name(branch)
    return branch


def index_path(branch: str) -> str:
    """The index's path in the build cache: ``flatcar-airflow/builds/<branch with / as ,>.json``."""
    return f"{INDEX_DIR}/{index_file_name(branch)}"


def manifest_branch(manifest: Mapping[str, Any]) -> str | None:
    """The branch a manifest's build belongs to (its DAG's branch; older manifests only name the ref)."""
    branch = manifest.get("branch") or manifest.get("ref")
    return branch if isinstance(branch, str) and branch else None


def _state(record: Any) -> str | None:
    state = record.get("state") if isinstance(record, Mapping) else None
    return state if isinstance(state, str) else None


def _task_records(manifest: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """``(task id, record)`` of every step in a manifest: ``sdk_bootstrap``, then ``<arch>.<step>``."""
    for name, record in sorted((manifest.get("steps") or {}).items()):
        yield name, record
    for arch, records in sorted((manifest.get("arches") or {}).items()):
        if isinstance(records, Mapping):
            for name, record in sorted(records.items()):
                yield f"{arch}.{name}", record


def _failure(task_id: str, record: Any) -> dict[str, str]:
    """``{task_id: cause}`` of a failed step whose cause was recognised (its ``failure.summary``)."""
    failure = record.get("failure") if isinstance(record, Mapping) else None
    summary = failure.get("summary") if isinstance(failure, Mapping) else None
    return {task_id: summary[:300]} if isinstance(summary, str) and summary else {}


def _seconds(record: Any) -> float | None:
    """A step's duration if it ran (succeeded or failed): a step that never ran has none, not zero."""
    if not isinstance(record, Mapping) or record.get("state") not in ("success", "failed"):
        return None
    value = record.get("duration_s")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return round(float(value), 1)
    return None


def _counts(summary: Any) -> dict[str, int]:
    if not isinstance(summary, Mapping):
        return {}
    return {
        key: summary[key]
        for key in _COUNTS
        if isinstance(summary.get(key), int) and not isinstance(summary.get(key), bool)
    }


def _channel(tag: str) -> str | None:
    channel, sep, _ = tag.partition("-")
    return channel if sep and channel.isalpha() else None


def _released(releases: Any) -> dict[str, Any] | None:
    """What the release runs (flatcar_airflow/release/) published: every offer, the last run and time."""
    if not isinstance(releases, list):
        return None
    records = [item for item in releases if isinstance(item, Mapping)]
    if not records:
        return None
    offers = sorted({str(offer) for item in records for offer in item.get("offers") or []})
    last = records[-1]
    return {"offers": offers, "at": last.get("published_at"), "run_id": last.get("run_id")}


def entry_from_manifest(manifest: Mapping[str, Any], manifest_paths: Iterable[str]) -> dict[str, Any]:
    """One build's index entry: who, what, when, the states per step and arch, the test counts.

    Only what a builds page lists; everything else stays in the manifest (``manifests`` names its copies,
    one per architecture the build wrote). Raises ValueError for a manifest without a version tag.
    """
    tag = manifest.get("version")
    if not isinstance(tag, str) or not tag:
        raise ValueError("the manifest has no version tag ('version')")
    versionfile = manifest.get("versionfile") if isinstance(manifest.get("versionfile"), Mapping) else {}
    steps: dict[str, str | None] = {}
    if isinstance(manifest.get("tag"), Mapping):
        steps["tag"] = _state(manifest["tag"])
    for name, record in sorted((manifest.get("steps") or {}).items()):
        steps[name] = _state(record)
    arches = {
        arch: {name: _state(record) for name, record in sorted(records.items())}
        for arch, records in sorted((manifest.get("arches") or {}).items())
        if isinstance(records, Mapping)
    }
    failures: dict[str, str] = {}
    durations: dict[str, float | None] = {}
    for task_id, record in _task_records(manifest):
        failures.update(_failure(task_id, record))
        durations[task_id] = _seconds(record)
    tests = {
        arch: {vendor: _counts(summary) for vendor, summary in sorted(vendors.items())}
        for arch, vendors in sorted((manifest.get("tests") or {}).items())
        if isinstance(vendors, Mapping)
    }
    released = _released(manifest.get("releases"))
    return {
        **({"released": released} if released else {}),
        "version_tag": tag,
        "version": versionfile.get("FLATCAR_VERSION"),
        "sdk_version": versionfile.get("FLATCAR_SDK_VERSION"),
        "channel": _channel(tag),
        "kind": manifest.get("kind"),
        "branch": manifest_branch(manifest),
        "ref": manifest.get("ref"),
        "commit": manifest.get("commit"),
        "dag_id": manifest.get("dag_id"),
        "run_id": manifest.get("run_id"),
        "run_type": manifest.get("run_type"),
        "run_time": manifest.get("run_time"),
        "started_at": manifest.get("started_at"),
        "finished_at": manifest.get("finished_at"),
        "state": manifest.get("state"),
        "steps": steps,
        "arches": arches,
        "tests": tests,
        "failures": failures,
        "durations": {task_id: seconds for task_id, seconds in durations.items() if seconds is not None},
        "manifests": sorted(set(manifest_paths)),
    }


def _time(value: Any) -> dt.datetime:
    if not isinstance(value, str):
        return _OLDEST
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return _OLDEST
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _newest_first_key(entry: Mapping[str, Any]) -> tuple[dt.datetime, dt.datetime, str]:
    # The run's time (a backfill's logical date, not when it ran) orders builds as versions are ordered;
    # the end of the run breaks ties, the tag makes the order total.
    return _time(entry.get("run_time")), _time(entry.get("finished_at")), str(entry.get("version_tag"))


def sort_entries(entries: Iterable[Mapping[str, Any]], limit: int = MAX_ENTRIES) -> list[dict[str, Any]]:
    """Newest first (by run time, then end time, then tag), at most ``limit`` entries."""
    return [dict(entry) for entry in sorted(entries, key=_newest_first_key, reverse=True)[:limit]]


def merge(
    entries: Iterable[Mapping[str, Any]], new: Mapping[str, Any], limit: int = MAX_ENTRIES
) -> list[dict[str, Any]]:
    """The index with ``new`` in it: an entry of the same version tag is replaced (a re-run of a build
    replaces it, never duplicates it), newest first, bounded to ``limit``."""
    tag = new["version_tag"]
    kept = [entry for entry in entries if entry.get("version_tag") != tag]
    return sort_entries([*kept, new], limit)


def entries_from_manifests(
    manifests: Iterable[tuple[str, Mapping[str, Any]]], branch: str, limit: int = MAX_ENTRIES
) -> tuple[list[dict[str, Any]], list[str]]:
    """The index of ``branch`` rebuilt from ``(cache path, manifest)`` pairs, and the problems met.

    A build writes the same manifest for every arch it built, so copies of one version tag are grouped:
    the newest (by end time, then run id) wins and the entry lists the copies equal to it. A copy left by
    an earlier run of the same version (that built another arch) is not listed.
    """
    groups: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    problems: list[str] = []
    for path, manifest in manifests:
        if manifest_branch(manifest) != branch:
            continue
        tag = manifest.get("version")
        if not isinstance(tag, str) or not tag:
            problems.append(f"{path}: the manifest has no version tag ('version')")
            continue
        groups.setdefault(tag, []).append((path, manifest))
    entries = []
    for copies in groups.values():
        _, newest = max(
            copies, key=lambda pair: (_time(pair[1].get("finished_at")), str(pair[1].get("run_id")))
        )
        entries.append(entry_from_manifest(newest, [path for path, copy in copies if copy == newest]))
    return sort_entries(entries, limit), problems


def parse_index(text: str | bytes, branch: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The entries of an index file and the entries dropped as unreadable (their problems).

    Raises :class:`CorruptIndex` (naming the problem) for text that is not this branch's index of schema
    :data:`SCHEMA_VERSION`, and :class:`NewerIndex` for a newer schema.
    """
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptIndex(f"invalid JSON: {err}") from None
    if not isinstance(data, dict):
        raise CorruptIndex(f"the file holds a JSON {type(data).__name__}, not an object")
    if data.get("kind") != INDEX_KIND:
        raise CorruptIndex(f"'kind' is {data.get('kind')!r}, not {INDEX_KIND!r}")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CorruptIndex(f"'schema_version' is {version!r}, not a schema version")
    if version > SCHEMA_VERSION:
        raise NewerIndex(f"schema version {version} is newer than this flatcar-airflow's ({SCHEMA_VERSION})")
    if version != SCHEMA_VERSION:
        raise CorruptIndex(f"schema version {version} is not {SCHEMA_VERSION}")
    if data.get("branch") != branch:
        raise CorruptIndex(f"the index is of branch {data.get('branch')!r}, not {branch!r}")
    builds = data.get("builds")
    if not isinstance(builds, list):
        raise CorruptIndex(f"'builds' is a JSON {type(builds).__name__}, not a list")
    entries, dropped = [], []
    for number, entry in enumerate(builds):
        if isinstance(entry, dict) and isinstance(entry.get("version_tag"), str) and entry["version_tag"]:
            entries.append(entry)
        else:
            dropped.append(f"builds[{number}] is not an entry with a version tag")
    return entries, dropped


def render_index(branch: str, entries: Sequence[Mapping[str, Any]], updated_at: dt.datetime) -> bytes:
    """The index file: compact JSON (a thousand entries stay a small download), keys sorted."""
    document = {
        "kind": INDEX_KIND,
        "schema_version": SCHEMA_VERSION,
        "branch": branch,
        "max_entries": MAX_ENTRIES,
        "updated_at": updated_at.astimezone(dt.UTC).isoformat(),
        "builds": sort_entries(entries),
    }
    return (json.dumps(document, sort_keys=True, separators=(",", ":")) + "\n").encode()
