"""The builds page's data: the branches' indexes and the builds' manifests, read from the build cache.

INPUTS:  the configuration (branches of the pipelines, the build cache connection, ``web.cache_seconds``);
         over HTTPS from the build cache: ``flatcar-airflow/builds/`` (its directory listing: branches
         that are no longer configured keep their page), ``flatcar-airflow/builds/<branch>.json`` and the
         manifests the entries name.
OUTPUTS: :class:`Builds` (every readable entry, newest first, with the problems met) and manifests.

Why a cache in memory: every page view needs every branch's index, and a page must answer in well under
a second with a thousand builds. An index is kept ``web.cache_seconds`` and then asked for again with its
ETag (nginx answers 304 when it did not change), so a busy page costs the cache one small request per
branch every few seconds, and a new build shows up within that time. Manifests never change once written
except by a re-run of the build, which changes the index entry's ``finished_at``: they are cached by
path and that time.

The page only reads: nothing here writes to the cache, Airflow's database or the disk.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..buildindex.entries import (
    INDEX_DIR,
    CorruptIndex,
    NewerIndex,
    branch_from_file_name,
    index_path,
    parse_index,
    sort_entries,
)

if TYPE_CHECKING:
    import httpx

    from ..config import Config
    from ..hooks.buildcache import BuildCacheHook

__all__ = ["Builds", "CacheUnreadable", "Source", "configured_branches", "parse_digests"]

#: Manifests kept in memory (a build page reads two: the build's and the previous one's).
MANIFESTS_KEPT = 256
#: Artifact digests kept in memory (a full build has about a hundred artifacts).
DIGESTS_KEPT = 20000


def parse_digests(text: str) -> str | None:
    """The SHA-512 in a ``.DIGESTS`` file (``# SHA512 HASH`` then ``<hex>  <file>``), else None."""
    lines = text.splitlines()
    for number, line in enumerate(lines[:-1]):
        if line.strip().upper() == "# SHA512 HASH":
            value = lines[number + 1].split(maxsplit=1)[0] if lines[number + 1].strip() else ""
            if len(value) == 128 and all(ch in "0123456789abcdef" for ch in value.lower()):
                return value.lower()
    return None


class CacheUnreadable(RuntimeError):
    """The build cache did not answer (or not with a file): the page says so instead of showing nothing."""


@dataclass
class _Cached:
    value: Any
    etag: str | None
    fetched: float


@dataclass
class Builds:
    """Every branch's entries (newest first), the branches, and what could not be read."""

    entries: list[dict[str, Any]]
    branches: list[str]
    problems: list[str] = field(default_factory=list)

    def by_tag(self, tag: str) -> dict[str, Any] | None:
        return next((entry for entry in self.entries if entry.get("version_tag") == tag), None)

    def previous(self, entry: Mapping[str, Any]) -> dict[str, Any] | None:
        """The build of the same branch just before ``entry`` (the index is newest first)."""
        same = [other for other in self.entries if other.get("branch") == entry.get("branch")]
        for number, other in enumerate(same):
            if other.get("version_tag") == entry.get("version_tag"):
                return same[number + 1] if number + 1 < len(same) else None
        return None


def configured_branches(config: Config) -> list[str]:
    """The branches the configuration builds: ``full.branch`` (when enabled), then ``os.branches``."""
    branches = [config.full.branch] if config.full.enabled else []
    return branches + [branch for branch in config.os.branches if branch not in branches]


class Source:
    """Reads indexes and manifests through one build cache connection, with a small cache in memory."""

    def __init__(self, config: Config, hook: BuildCacheHook | None = None) -> None:
        from ..hooks.buildcache import BuildCacheHook

        self.config = config
        self.hook = hook or BuildCacheHook(config.buildcache_conn_id)
        self.ttl = config.web.cache_seconds
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._indexes: dict[str, _Cached] = {}
        self._listing: _Cached | None = None
        self._manifests: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._digests: OrderedDict[str, str | None] = OrderedDict()

    # -- HTTP ----------------------------------------------------------------------------------------------

    def _get(self, path: str, etag: str | None = None) -> httpx.Response:
        import httpx

        headers = {"If-None-Match": etag} if etag else {}
        url = self.hook.url(path)
        with self._lock:
            if self._client is None:
                self._client = self.hook.get_conn()
            client = self._client
        try:
            return client.get(url, headers=headers)
        except httpx.HTTPError as err:
            # The URL is the cache's public HTTPS address (no credentials): safe to show.
            raise CacheUnreadable(f"the build cache did not answer {url}: {type(err).__name__}") from None

    def cache_url(self, path: str) -> str:
        """The public HTTPS address of a path in the build cache."""
        return self.hook.url(path)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- indexes -------------------------------------------------------------------------------------------

    def _fresh(self, cached: _Cached | None) -> bool:
        return cached is not None and time.monotonic() - cached.fetched < self.ttl

    def branches(self) -> list[str]:
        """Configured branches first, then the other branches that have an index in the cache."""
        from ..buildindex.store import parse_listing

        configured = configured_branches(self.config)
        cached = self._listing
        if not self._fresh(cached):
            response = self._get(INDEX_DIR + "/", cached.etag if cached else None)
            if response.status_code == 304 and cached is not None:
                cached.fetched = time.monotonic()
            elif response.status_code == 404:
                cached = _Cached([], None, time.monotonic())
            elif response.status_code == 200:
                found = []
                for name in parse_listing(response.text)[1]:
                    try:
                        found.append(branch_from_file_name(name))
                    except ValueError:
                        continue
                cached = _Cached(sorted(found), response.headers.get("etag"), time.monotonic())
            else:
                raise CacheUnreadable(
                    f"the build cache answered HTTP {response.status_code} for {INDEX_DIR}/"
                )
            self._listing = cached
        return configured + [branch for branch in cached.value if branch not in configured]

    def index(self, branch: str) -> tuple[list[dict[str, Any]], str | None]:
        """A branch's entries (newest first) and a problem to show (a corrupt or newer index)."""
        cached = self._indexes.get(branch)
        if not self._fresh(cached):
            response = self._get(index_path(branch), cached.etag if cached else None)
            now = time.monotonic()
            if response.status_code == 304 and cached is not None:
                cached.fetched = now
            elif response.status_code == 404:
                cached = _Cached(([], None), None, now)
            elif response.status_code == 200:
                try:
                    entries, dropped = parse_index(response.content, branch)
                    problem = f"{len(dropped)} unreadable entries left out" if dropped else None
                    value = (entries, problem)
                except (CorruptIndex, NewerIndex) as err:
                    value = ([], f"the builds index of {branch} is unreadable: {err}")
                cached = _Cached(value, response.headers.get("etag"), now)
            else:
                raise CacheUnreadable(
                    f"the build cache answered HTTP {response.status_code} for {index_path(branch)}"
                )
            self._indexes[branch] = cached
        return cached.value

    def builds(self, branches: Iterable[str] | None = None) -> Builds:
        """Every entry of ``branches`` (default: all), newest first."""
        names = list(branches) if branches is not None else self.branches()
        entries: list[dict[str, Any]] = []
        problems = []
        for branch in names:
            found, problem = self.index(branch)
            entries.extend(found)
            if problem:
                problems.append(problem)
        return Builds(sort_entries(entries, limit=len(entries)), names, problems)

    # -- manifests -----------------------------------------------------------------------------------------

    def manifest(self, entry: Mapping[str, Any]) -> dict[str, Any] | None:
        """The build's manifest (its first readable copy), None when none is in the cache any more."""
        key_time = str(entry.get("finished_at"))
        for path in entry.get("manifests") or []:
            key = (path, key_time)
            if key in self._manifests:
                self._manifests.move_to_end(key)
                return self._manifests[key]
            response = self._get(path)
            if response.status_code != 200:
                continue
            try:
                manifest = json.loads(response.content)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if not isinstance(manifest, dict):
                continue
            self._manifests[key] = manifest
            while len(self._manifests) > MANIFESTS_KEPT:
                self._manifests.popitem(last=False)
            return manifest
        return None

    def digests(self, paths: Iterable[str]) -> dict[str, str | None]:
        """The SHA-512 of each artifact from its ``<file>.DIGESTS`` (what the scripts write next to an
        image), None where there is none; read concurrently and kept (an artifact's digest file is written
        once, with the artifact)."""
        from concurrent.futures import ThreadPoolExecutor

        wanted = [path for path in dict.fromkeys(paths) if path not in self._digests]

        def read(path: str) -> tuple[str, str | None]:
            try:
                response = self._get(path + ".DIGESTS")
            except CacheUnreadable:
                return path, None
            if response.status_code != 200:
                return path, None
            return path, parse_digests(response.text)

        if wanted:
            with ThreadPoolExecutor(max_workers=self.hook.concurrency) as pool:
                for path, digest in pool.map(read, wanted):
                    self._digests[path] = digest
            while len(self._digests) > DIGESTS_KEPT:
                self._digests.popitem(last=False)
        return {path: self._digests.get(path) for path in paths}

    def text(self, path: str, limit: int = 512 * 1024) -> str | None:
        """A small text file of the cache (a report), None when missing; cut at ``limit`` bytes."""
        response = self._get(path)
        if response.status_code != 200:
            return None
        data = response.content[:limit]
        return data.decode("utf-8", errors="replace")
