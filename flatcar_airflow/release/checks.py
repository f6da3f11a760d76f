"""Whether a version may be released, decided before anything is published (the ``check`` task).

A version may be released when it is a build of a release branch (one of ``os.branches``) that the
branch's builds index knows, whose tests all ran and passed, whose build succeeded, which built every
architecture ``release_build`` publishes, and whose recorded artifacts are all in the build cache. Each
refusal is a :class:`ReleaseRefused` whose message names the reason; nothing has been written then.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import Config
from ..steps import ARCHES
from ..versions import VersionError, parse_tag

__all__ = ["ReleaseRefused", "check_release", "manifest_artifacts"]


class ReleaseRefused(ValueError):
    """The version may not be released; the message says why."""


def manifest_artifacts(manifest: Mapping[str, Any]) -> list[str]:
    """The cache paths of every artifact the build's step tasks recorded (all arches)."""
    paths: list[str] = []
    records = list((manifest.get("steps") or {}).values())
    for steps in (manifest.get("arches") or {}).values():
        records += list(steps.values()) if isinstance(steps, Mapping) else []
    for record in records:
        for artifact in (record or {}).get("artifacts") or []:
            if isinstance(artifact, Mapping) and isinstance(artifact.get("path"), str):
                paths.append(artifact["path"])
    return sorted(set(paths))


def _find(hook, branches: list[str], tag: str) -> tuple[str, dict] | None:
    from ..buildindex.store import read_index

    for branch in branches:
        for entry in read_index(hook, branch).entries:
            if entry.get("version_tag") == tag:
                return branch, entry
    return None


def _failed_tests(entry: Mapping[str, Any], manifest: Mapping[str, Any]) -> list[str]:
    failed = []
    for arch, vendors in sorted((entry.get("tests") or {}).items()):
        for vendor, counts in sorted(vendors.items()):
            if counts.get("failed"):
                names = ((manifest.get("tests") or {}).get(arch, {}).get(vendor) or {}).get("failures") or []
                shown = f" ({', '.join(names[:5])})" if names else ""
                failed.append(f"{arch} {vendor}: {counts['failed']} failed{shown}")
    return failed


def check_release(config: Config, params: Mapping[str, Any], hook=None) -> dict[str, Any]:
    """The release plan (XCom of ``check``), or :class:`ReleaseRefused` naming why not."""
    import json

    from ..hooks.buildcache import BuildCacheHook

    tag = str(params.get("version") or "")
    try:
        parse_tag(tag)
    except (VersionError, ValueError) as err:
        raise ReleaseRefused(f"version {tag[:80]!r} is not a version tag: {err}") from None
    offers = list(params.get("offers") or [])
    usable = config.release.usable_offers
    bad = [offer for offer in offers if offer not in usable]
    if not offers or bad:
        raise ReleaseRefused(
            f"offers {bad or offers} cannot be published: choose among "
            f"{', '.join(usable) or '(none configured)'}"
        )
    hook = hook or BuildCacheHook(config.buildcache_conn_id)
    branches = list(config.os.branches)
    found = _find(hook, branches, tag)
    if found is None:
        other = _find(hook, [config.full.branch], tag) if config.full.enabled else None
        if other is not None:
            raise ReleaseRefused(
                f"{tag} is a build of {other[0]}, not of a release branch "
                f"({', '.join(branches) or 'none configured'})"
            )
        raise ReleaseRefused(
            f"{tag} does not exist: no build of it in the builds index of the release branches "
            f"({', '.join(branches) or 'none configured'})"
        )
    branch, entry = found
    manifests = list(entry.get("manifests") or [])
    if not manifests:
        raise ReleaseRefused(f"{tag}: its index entry names no build manifest")
    try:
        manifest = json.loads(hook.read_text(manifests[0]))
    except Exception as err:
        raise ReleaseRefused(f"{tag}: its build manifest {manifests[0]} cannot be read: {err}") from None
    failed = _failed_tests(entry, manifest)
    if failed:
        raise ReleaseRefused(f"{tag}: its tests did not pass: {'; '.join(failed)}")
    tested = sorted(arch for arch, vendors in (entry.get("tests") or {}).items() if vendors)
    missing_arches = [arch for arch in ARCHES if arch not in tested]
    if missing_arches:
        raise ReleaseRefused(
            f"{tag}: its tests did not pass: no test results for {', '.join(missing_arches)} "
            f"(release_build publishes {', '.join(ARCHES)})"
        )
    if entry.get("state") != "success":
        raise ReleaseRefused(f"{tag}: its build did not succeed (state {entry.get('state')})")
    paths = manifest_artifacts(manifest)
    if not paths:
        raise ReleaseRefused(f"{tag}: its artifacts are missing: the manifest records none")
    found_paths = hook.check(paths)
    absent = [path for path in paths if not found_paths[path].exists]
    if absent:
        shown = ", ".join(absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
        raise ReleaseRefused(f"{tag}: its artifacts are missing from the build cache: {shown}")
    return {
        "tag": tag,
        "versionfile": manifest.get("versionfile"),
        "branch": branch,
        "build_run_id": manifest.get("run_id"),
        "arches": list(ARCHES),
        "offers": offers,
        "dry_run": bool(params.get("dry_run", True)),
        "manifests": manifests,
        "artifacts_checked": len(paths),
    }
