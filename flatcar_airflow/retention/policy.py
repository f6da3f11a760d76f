"""The retention policy: which development builds the build cache keeps, and which go (pure functions).

Policy in the orchestrator, mechanism in the scripts: this module only *decides*. The versions it
returns are handed to the scripts' own ``garbage_collect`` as ``PURGE_VERSIONS``, which removes their
cache directories and tags (and the orphan directories no tag names).

A version tag is kept when any of these holds, and the first that holds is its reason:

* it is an official release (no build id, or ``-pro``): never a candidate, as in the scripts;
* it is one of the newest ``keep`` development builds of its branch;
* it is younger than ``min_age_days`` (or its age is not known);
* the builds page pins it (``retention.pinned``);
* a queued or running DAG run references it (its version, or its SDK);
* it is the last successful nightly of a supported branch;
* a kept build uses its directories: its SDK is a kept build's SDK, or a kept build has the same
  version number (the scripts remove by version number, so both would go).

Everything else of a development version goes. ``orphans`` then checks the scripts' orphan sweep: a
protected version whose directories no remaining tag names would be swept; the collector refuses to
apply then (:attr:`Decision.refusals`).

INPUTS:  the version tags of the scripts origin, what the builds index says of them (:class:`Build`),
         the protections (pins, versions in use, supported branches), ``keep``, ``min_age_days``, now.
OUTPUTS: a :class:`Decision`: the versions to purge (oldest first) and why every other one stays.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..versions import FlatcarVersion, VersionError, parse_tag

__all__ = [
    "DEFAULT_KEEP",
    "DEFAULT_MIN_AGE_DAYS",
    "Build",
    "Decision",
    "decide",
    "is_development_tag",
    "orphans",
]

#: The scripts' defaults (garbage_collect.sh).
DEFAULT_KEEP = 50
DEFAULT_MIN_AGE_DAYS = 14


@dataclass(frozen=True)
class Build:
    """What is known of one version tag: from the builds index, or from the tag alone."""

    tag: str
    branch: str | None = None
    created: dt.datetime | None = None
    version: str | None = None  # FLATCAR_VERSION (version.txt form)
    sdk_version: str | None = None
    #: a scheduled nightly whose run succeeded
    successful_nightly: bool = False


@dataclass
class Decision:
    purge: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    refusals: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"purge": list(self.purge), "kept": dict(self.kept), "refusals": list(self.refusals)}


def _parsed(tag: str) -> FlatcarVersion | None:
    try:
        return parse_tag(tag)
    except (VersionError, ValueError):
        return None


def is_development_tag(tag: str) -> bool:
    """A tag the scripts' collector may purge: a channel, three numbers and a build id, not ``-pro``."""
    version = _parsed(tag)
    return version is not None and bool(version.build_id) and not tag.endswith("-pro")


def build_of(tag: str, known: Mapping[str, Build]) -> Build:
    """The index's record of a tag, or what the tag itself says (its version, a nightly's time)."""
    build = known[tag] if tag in known else Build(tag=tag)
    version = _parsed(tag)
    if version is None:
        return build
    created = build.created
    if created is None and version.nightly is not None:
        created = version.nightly.time
    return Build(
        tag=tag,
        branch=build.branch,
        created=created,
        version=build.version or version.versionfile_version,
        sdk_version=build.sdk_version,
        successful_nightly=build.successful_nightly,
    )


def _group(build: Build) -> str:
    """The branch a build counts against: the index's, else the tag's channel and major number."""
    if build.branch:
        return build.branch
    version = _parsed(build.tag)
    return f"{version.channel}-{version.major}" if version else build.tag


def _newest_first(builds: Iterable[Build]) -> list[Build]:
    oldest = dt.datetime.min.replace(tzinfo=dt.UTC)
    # Unknown times sort as newest: they are kept rather than purged by mistake.
    return sorted(builds, key=lambda b: (b.created is None, b.created or oldest, b.tag), reverse=True)


def decide(
    tags: Iterable[str],
    known: Mapping[str, Build],
    *,
    keep: int = DEFAULT_KEEP,
    min_age_days: int = DEFAULT_MIN_AGE_DAYS,
    now: dt.datetime,
    pinned: Iterable[str] = (),
    in_use: Mapping[str, str] | None = None,
    in_use_versions: Mapping[str, str] | None = None,
    supported_branches: Iterable[str] = (),
) -> Decision:
    """Which development versions go (see the module docstring).

    ``in_use`` maps tags to the run that references them; ``in_use_versions`` maps version numbers
    (version.txt form, e.g. a running build's SDK) to the run.
    """
    if keep < 0 or min_age_days < 0:
        raise ValueError(f"keep ({keep}) and min_age_days ({min_age_days}) must not be negative")
    in_use = dict(in_use or {})
    in_use_versions = dict(in_use_versions or {})
    pinned = set(pinned)
    supported = set(supported_branches)
    decision = Decision()
    builds: dict[str, Build] = {}
    for tag in sorted(set(tags)):
        if _parsed(tag) is None:
            continue  # not a version tag: the scripts' collector ignores it too
        if not is_development_tag(tag):
            decision.kept[tag] = "official release"
            continue
        builds[tag] = build_of(tag, known)

    by_branch: dict[str, list[Build]] = defaultdict(list)
    for build in builds.values():
        by_branch[_group(build)].append(build)
    newest: dict[str, str] = {}
    last_nightly: dict[str, str] = {}
    for branch, group in by_branch.items():
        ordered = _newest_first(group)
        for build in ordered[:keep]:
            newest[build.tag] = f"one of the newest {keep} builds of {branch}"
        if branch in supported:
            nightly = next((b for b in ordered if b.successful_nightly), None)
            if nightly is not None:
                last_nightly[nightly.tag] = f"the last successful nightly of {branch}"

    cutoff = now - dt.timedelta(days=min_age_days)
    candidates: list[Build] = []
    for tag, build in builds.items():
        reason = (
            ("pinned on the builds page" if tag in pinned else None)
            or (f"in use by {in_use[tag]}" if tag in in_use else None)
            or (
                f"its version {build.version} is in use by {in_use_versions[build.version]}"
                if build.version in in_use_versions
                else None
            )
            or last_nightly.get(tag)
            or newest.get(tag)
            or ("its age is not known" if build.created is None else None)
            or (f"younger than {min_age_days} days" if build.created > cutoff else None)
        )
        if reason:
            decision.kept[tag] = reason
        else:
            candidates.append(build)

    # A purge removes by version number (and a full build's SDK with it): keep what kept builds use.
    kept_builds = [builds[tag] for tag in decision.kept if tag in builds]
    used: dict[str, str] = {}
    for build in kept_builds:
        if build.sdk_version:
            used.setdefault(build.sdk_version, f"the SDK of kept {build.tag}")
        if build.version:
            used.setdefault(build.version, f"the version of kept {build.tag}")
    for tag in pinned | set(in_use):
        version = _parsed(tag)
        if version is not None:
            used.setdefault(version.versionfile_version, f"the version of {tag}")
    for build in _newest_first(candidates)[::-1]:
        if build.version in used:
            decision.kept[build.tag] = f"its directories are {used[build.version]}"
        else:
            decision.purge.append(build.tag)
    return decision


def orphans(directory_names: Iterable[str], remaining_tags: Iterable[str]) -> list[str]:
    """The names the scripts' orphan sweep removes: no remaining tag contains the name (``+`` as ``-``)."""
    tags = list(remaining_tags)
    return [name for name in directory_names if not any(name.replace("+", "-") in tag for tag in tags)]


def protected_orphans(orphan_names: Sequence[str], protected_versions: Mapping[str, str]) -> list[str]:
    """Refusals: protected version directories (``{version: why}``) the orphan sweep would remove."""
    found = []
    for name in orphan_names:
        for version, why in protected_versions.items():
            if name in (version, version.replace("+", "-")):
                found.append(f"the orphan sweep would remove {name}, which is {why}")
                break
    return found
