"""Reading and writing the builds index in the build cache; rebuilding it from the manifests.

INPUTS:  the build cache connection (:class:`~flatcar_airflow.hooks.buildcache.BuildCacheHook`): HTTPS
         reads of the index (``flatcar-airflow/builds/<branch>.json``), of the cache's directory listings
         (nginx autoindex HTML of ``images/`` and ``images/<arch>/``) and of the manifests
         (``images/<arch>/<VER>/flatcar-airflow-manifest.json``); for an update, the manifest just written.
OUTPUTS: the index file, written through the hook's ``upload`` (``mkdir -p`` + rsync: a temporary file
         renamed into place, so a reader sees the old index or the new one); a status dict for the
         summary's XCom and log.

Why read-modify-write is safe: only the summary task of a branch's pipeline updates its index, and the
branch lock (operators/branch_lock.py) lets one build of a branch hold it at a time, up to the end of its
summary. ``flatcar-airflow index rebuild`` is not under that lock: run it while no summary of the branch
runs (it takes seconds; a summary that raced it can be repaired by running it again).

Why an update never raises: by the time the index is written the build's artifacts and its manifest are
in the cache, and the index can always be rebuilt from the manifests. A failed update is a warning whose
first line names the cause; the run keeps the state of the build.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .entries import (
    CorruptIndex,
    NewerIndex,
    entries_from_manifests,
    entry_from_manifest,
    index_file_name,
    index_path,
    manifest_branch,
    merge,
    parse_index,
    render_index,
)

if TYPE_CHECKING:
    import httpx

    from ..hooks.buildcache import BuildCacheHook

__all__ = [
    "IndexRead",
    "IndexUnavailable",
    "NoBuilds",
    "list_manifests",
    "parse_listing",
    "read_index",
    "rebuild",
    "update_index",
    "write_index",
]

log = logging.getLogger(__name__)

# One path segment of a listing that we follow (what the cache's writers can create; no '..').
_SEGMENT = re.compile(r"^[A-Za-z0-9._+@=,-]+$")


class IndexUnavailable(RuntimeError):
    """The cache did not answer a read (other than 404): an update must not overwrite what it did not see."""


class NoBuilds(RuntimeError):
    """No manifest of the branch in the cache: nothing to rebuild an index from."""


@dataclass
class IndexRead:
    """The index as read: its entries, whether the file exists, and why it was unusable (corrupt)."""

    entries: list[dict[str, Any]]
    exists: bool
    problem: str | None = None
    dropped: list[str] = field(default_factory=list)


def _get(client: httpx.Client, url: str):
    import httpx

    try:
        return client.get(url)
    except httpx.HTTPError as err:
        raise IndexUnavailable(f"cannot read {url}: {type(err).__name__}: {err}") from None


def read_index(hook: BuildCacheHook, branch: str) -> IndexRead:
    """The branch's index over HTTPS: a 404 is an empty index, an unreadable file a :class:`IndexRead`
    with ``problem`` set. Raises :class:`IndexUnavailable` and :class:`NewerIndex`."""
    import httpx

    from ..hooks.buildcache import BuildCacheUnreachable

    url = hook.url(index_path(branch))

    def attempt() -> httpx.Response:
        with hook.get_conn() as client:
            response = client.get(url)
        if response.status_code >= 500:
            response.raise_for_status()  # a cache that restarts: the hook tries again
        return response

    try:
        response = hook.retrying(f"reading {index_path(branch)}", hook.settings.http_url, attempt)
    except (BuildCacheUnreachable, httpx.HTTPError) as err:
        raise IndexUnavailable(f"cannot read {url}: {type(err).__name__}: {err}") from None
    if response.status_code == 404:
        return IndexRead([], exists=False)
    if response.status_code != 200:
        raise IndexUnavailable(f"cannot read {url}: HTTP {response.status_code}")
    try:
        entries, dropped = parse_index(response.content, branch)
    except CorruptIndex as err:
        return IndexRead([], exists=True, problem=str(err))
    return IndexRead(entries, exists=True, dropped=dropped)


def write_index(
    hook: BuildCacheHook, branch: str, entries: Sequence[Mapping[str, Any]], now: dt.datetime | None = None
) -> str:
    """Upload the index (atomically: rsync's temporary file and rename); returns its URL."""
    return hook.upload(index_path(branch), render_index(branch, entries, now or dt.datetime.now(dt.UTC)))


def update_index(
    hook: BuildCacheHook, manifest: Mapping[str, Any], manifest_paths: Sequence[str]
) -> dict[str, Any]:
    """Put one build into its branch's index (the summary task, after the manifest is written).

    Returns ``{"path", "url", "updated", "entries", "warning"}``; never raises (see the module docstring).
    A corrupt index is replaced by a new one holding this build, with a warning that says how to get the
    older builds back.
    """
    branch = manifest_branch(manifest)
    status: dict[str, Any] = {"path": None, "url": None, "updated": False, "entries": None, "warning": None}
    rebuild_hint = f"flatcar-airflow index rebuild --branch {branch}"
    try:
        status["path"] = path = index_path(branch or "")
        entry = entry_from_manifest(manifest, manifest_paths)
        current = read_index(hook, branch)
        notes = []
        if current.problem:
            notes.append(
                f"builds index {path} was corrupt ({current.problem}); started a new index with this build: "
                f"`{rebuild_hint}` recovers the older builds from their manifests"
            )
        if current.dropped:
            notes.append(
                f"builds index {path}: dropped {len(current.dropped)} unreadable entries "
                f"({'; '.join(current.dropped[:3])})"
            )
        entries = merge(current.entries, entry)
        status["url"] = write_index(hook, branch, entries)
        status.update(updated=True, entries=len(entries), warning="\n".join(notes) or None)
    except NewerIndex as err:
        status["warning"] = (
            f"builds index {status['path']} not updated: {err}; a newer flatcar-airflow maintains it, so "
            "it is left alone (the build and its manifest are fine)"
        )
    except Exception as err:  # the build is done and its manifest written: never fail the run here
        status["warning"] = (
            f"builds index {status['path'] or 'of branch ' + repr(branch)} not updated: {err}\n"
            f"The build and its manifest are fine; the index lacks this build until the next build of the "
            f"branch writes it or `{rebuild_hint}` rebuilds it from the manifests."
        )
    if status["warning"]:
        log.warning("%s", status["warning"])
    else:
        log.info(
            "Builds index %s: %d builds, newest first (%s)", status["path"], status["entries"], status["url"]
        )
    return status


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(value for name, value in attrs if name == "href" and value)


def parse_listing(html: str) -> tuple[list[str], list[str]]:
    """``(directories, files)`` of an nginx autoindex page: the names its links point at, relative ones
    of one path segment only (no ``../``, no absolute links, no query strings)."""
    parser = _Links()
    parser.feed(html)
    parser.close()
    directories, files = [], []
    for href in parser.hrefs:
        if "?" in href or "#" in href or href.startswith("/") or "://" in href:
            continue
        is_dir = href.endswith("/")
        name = unquote(href.removesuffix("/"))
        if not _SEGMENT.fullmatch(name) or name in (".", ".."):
            continue
        (directories if is_dir else files).append(name)
    return directories, files


def _subdirectories(hook: BuildCacheHook, client: httpx.Client, path: str) -> list[str]:
    url = hook.url(path.rstrip("/") + "/")
    response = _get(client, url)
    if response.status_code == 404:
        return []
    if response.status_code != 200:
        raise IndexUnavailable(f"cannot list {url}: HTTP {response.status_code}")
    return parse_listing(response.text)[0]


def list_manifests(hook: BuildCacheHook) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """Every build manifest in the cache, ``(path, manifest)``, and the ones that could not be read.

    Lists ``images/`` and ``images/<arch>/`` and GETs ``images/<arch>/<VER>/<manifest>`` for every version
    directory (concurrently; a 404 is a version some other CI built).
    """
    import json

    from ..build_plan import MANIFEST_NAME

    with hook.get_conn() as client, ThreadPoolExecutor(max_workers=hook.concurrency) as pool:
        arches = _subdirectories(hook, client, "images")
        paths = [
            f"images/{arch}/{version}/{MANIFEST_NAME}"
            for arch in arches
            for version in _subdirectories(hook, client, f"images/{arch}")
        ]

        def fetch(path: str) -> tuple[str, Any, str | None]:
            response = _get(client, hook.url(path))
            if response.status_code == 404:
                return path, None, None
            if response.status_code != 200:
                return path, None, f"{path}: HTTP {response.status_code}"
            try:
                manifest = json.loads(response.content)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                return path, None, f"{path}: invalid JSON: {err}"
            if not isinstance(manifest, dict):
                return path, None, f"{path}: not a JSON object"
            return path, manifest, None

        found, problems = [], []
        for path, manifest, problem in pool.map(fetch, paths):
            if problem:
                problems.append(problem)
            elif manifest is not None:
                found.append((path, manifest))
    return found, problems


def rebuild(hook: BuildCacheHook, branch: str | None = None) -> dict[str, Any]:
    """Rewrite the index of ``branch`` (or of every branch with a manifest) from the manifests in the cache.

    Raises :class:`NoBuilds` when ``branch`` has no manifest (a typo must not leave an empty index), and
    ValueError for a branch name that cannot be an index.
    """
    if branch is not None:
        index_file_name(branch)
    manifests, problems = list_manifests(hook)
    found = sorted({name for _, manifest in manifests if (name := manifest_branch(manifest))})
    if branch is not None and branch not in found:
        raise NoBuilds(
            f"no build manifest of branch {branch!r} in the cache (read {len(manifests)} manifests"
            + (f" of the branches {', '.join(found)})" if found else ")")
        )
    written = []
    now = dt.datetime.now(dt.UTC)
    for name in [branch] if branch is not None else found:
        try:
            index_file_name(name)
        except ValueError as err:
            problems.append(f"not indexed: {err}")
            continue
        entries, more = entries_from_manifests(manifests, name)
        problems += more
        url = write_index(hook, name, entries, now)
        written.append(
            {
                "branch": name,
                "path": index_path(name),
                "url": url,
                "entries": len(entries),
                "newest": entries[0]["version_tag"] if entries else None,
            }
        )
    return {"indexes": written, "manifests_read": len(manifests), "problems": problems}
