"""What the scripts' garbage collector would remove, read from the build cache's HTTPS listings.

The collector's report needs paths and sizes before anything is removed (a dry run removes nothing, and
the scripts print only ``ls -la`` output). The cache serves its directory with nginx's autoindex (exact
sizes), so this module walks those pages: the same paths the scripts remove for a version
(:func:`version_patterns`), and the directories of the areas their orphan sweep lists (:data:`SWEPT`).

INPUTS:  a :class:`~flatcar_airflow.hooks.buildcache.BuildCacheHook` (HTTPS reads only).
OUTPUTS: paths relative to the cache root with their bytes.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..buildindex.store import parse_listing

if TYPE_CHECKING:
    import httpx

    from ..hooks.buildcache import BuildCacheHook

__all__ = ["SWEPT", "CacheReader", "version_patterns"]

#: The areas whose entries the scripts' orphan sweep removes when no tag names them.
SWEPT = (
    "sdk/amd64",
    "containers",
    "boards/amd64-usr",
    "boards/arm64-usr",
    "images/amd64",
    "images/arm64",
    "testing",
    "build-logs",
)
# An autoindex line: <a href="NAME">…</a>   01-Dec-2026 15:56    1234   (directories: "-").
_LINE = re.compile(r'<a href="(?P<href>[^"]+)">[^<]*</a>\s+\S+\s+\S+\s+(?P<size>\d+|-)\s*$')


def version_patterns(version: str) -> list[str]:
    """The paths the scripts remove for a version (version.txt form), relative, with ``*`` globs."""
    docker = version.replace("+", "-")
    return [
        f"sdk/*/{version}",
        f"containers/{docker}/flatcar-sdk-*",
        f"containers/{docker}/flatcar-packages-*",
        f"boards/*/{version}",
        f"containers/{docker}/flatcar-images-*",
        f"images/*/{version}",
        f"testing/{version}",
        f"build-logs/{version}",
    ]


@dataclass
class CacheReader:
    """Directory listings and sizes over HTTPS, each page read once per reader."""

    hook: BuildCacheHook
    client: httpx.Client

    def __post_init__(self) -> None:
        self._pages: dict[str, tuple[list[str], dict[str, int]]] = {}

    def listing(self, path: str) -> tuple[list[str], dict[str, int]]:
        """``(directories, {file: bytes})`` of a directory; a missing one is empty."""
        path = path.strip("/")
        if path not in self._pages:
            response = self.client.get(self.hook.url(path + "/" if path else ""))
            if response.status_code == 404:
                self._pages[path] = ([], {})
            else:
                response.raise_for_status()
                directories, names = parse_listing(response.text)
                sizes: dict[str, int] = {}
                for line in response.text.splitlines():
                    match = _LINE.search(line)
                    if match and match["size"] != "-":
                        sizes[match["href"]] = int(match["size"])
                files = {name: sizes.get(name, 0) for name in names}
                self._pages[path] = (directories, files)
        return self._pages[path]

    def bytes_under(self, path: str) -> int:
        directories, files = self.listing(path)
        return sum(files.values()) + sum(self.bytes_under(f"{path}/{name}") for name in directories)

    def expand(self, pattern: str) -> list[tuple[str, int]]:
        """Existing paths matching a pattern (``*`` within components), with their bytes."""
        found: list[str] = [""]
        parts = pattern.strip("/").split("/")
        sizes: dict[str, int] = {}
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            matched: list[str] = []
            for base in found:
                directories, files = self.listing(base)
                names = directories + (list(files) if last else [])
                for name in names:
                    if fnmatch.fnmatchcase(name, part):
                        full = f"{base}/{name}".lstrip("/")
                        matched.append(full)
                        if name in files and last:
                            sizes[full] = files[name]
            found = matched
        return [(path, sizes[path] if path in sizes else self.bytes_under(path)) for path in found]

    def names(self, area: str) -> list[str]:
        directories, files = self.listing(area)
        return directories + list(files)
