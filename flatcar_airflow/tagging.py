"""Version tagging of the scripts repo: the scripts' ``update_and_push_version`` flow, made safe.

INPUTS:  a scripts repo origin, the ref to build (branch, tag or commit; optionally the exact commit of a
         backfill), the version tag to create, the build kind (full: SDK and OS share the version;
         os: the branch's SDK is kept), and for nightlies a check whether a previous build's outputs exist.
OUTPUTS: a tag ``<version>`` on the origin pointing at a commit "New version: <version>" (signed off by
         the CI identity when the commit's own scripts sign theirs off: :func:`scripts_sign_off`) whose
         tree is the ref's tree with version.txt rewritten (and, in the seed era's layout, both submodules
         repointed at their matching version tags); for a nightly built on the branch head, the branch
         advanced to that commit in the same atomic push. A :class:`TagResult` says what happened.

What it keeps from the scripts (``ci-automation/ci_automation_common.sh``, ``sdk_bootstrap.sh``,
``packages-tag.sh``): the version.txt content, the commit message, the tree, "reuse an existing tag whose
tree is identical, fail on a divergent one", pushing the branch only for nightlies on the branch head, and
the nightly shortcut. What it does better:

* a divergent existing tag is never moved or deleted, and the error says so;
* a backfill (a nightly of a commit that is not the branch head) tags the commit and never pushes the branch;
* the branch and the tag are pushed atomically, the branch with a lease on the commit we built on, so a
  branch that moved on leaves no tag behind, and two taggers racing end with one tag and one clear loser;
* the shortcut skips a nightly only when the outputs of the tagged build exist (flatcar/scripts#509);
* no clone: see :mod:`flatcar_airflow.scripts_repo`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from .scripts_repo import SUBMODULE_PATHS, GitError, Layout, RefKind, RemoteRefs, ScriptsRepo, check_ref_name
from .versionfile import VERSIONFILE_PATH, VersionFile
from .versions import FlatcarVersion, VersionError, parse_tag

__all__ = [
    "BranchMovedError",
    "BuildKind",
    "CIIdentity",
    "ShortcutCandidate",
    "TagConflictError",
    "TagRequest",
    "TagResult",
    "TaggingError",
    "nightly_version",
    "scripts_sign_off",
    "tag_version",
]

log = logging.getLogger(__name__)

_NIGHTLY_TAG = re.compile(r"-nightly-[0-9]{8}-[0-9]{4}\Z")
#: Where the scripts define ``update_and_push_version``, whose ``git commit`` writes the version commit.
COMMON_SCRIPT = "ci-automation/ci_automation_common.sh"
_FUNCTION_START = re.compile(
    r"(?m)^[ \t]*(?:function[ \t]+)?update_and_push_version[ \t]*(?:\([ \t]*\))?[ \t]*\{"
)
_FUNCTION_END = re.compile(r"(?m)^\}")


def scripts_sign_off(repo: ScriptsRepo, commit: str) -> bool:
    """Whether the scripts at ``commit`` sign off their "New version" commit (``git commit --signoff``).

    The version commit is to be byte-identical to the one the repository's own era writes, and the eras
    differ: ``update_and_push_version`` commits with ``--signoff`` since July 2025 (flatcar/scripts#3123,
    first in alpha-4426.0.0) and without it before: the seed era (flatcar-3374 and before, the submodule
    layout, which ended in April 2023) and the in-tree years after it. So a submodule-layout commit never
    signs off, and an in-tree commit answers from its own ``update_and_push_version``; one without that
    function (a repository of its own, a test origin) gets today's form.
    """
    if repo.layout(commit) is Layout.SUBMODULES:
        return False
    try:
        text = repo.read_file(commit, COMMON_SCRIPT).decode("utf-8", "replace")
    except GitError:
        return True
    start = _FUNCTION_START.search(text)
    if start is None:
        return True
    end = _FUNCTION_END.search(text, start.end())
    for line in text[start.end() : end.start() if end else len(text)].splitlines():
        words = line.split("#", 1)[0].split()
        if words[:2] == ["git", "commit"]:
            return "--signoff" in words or "-s" in words
    return True


class BuildKind(StrEnum):
    FULL = "full"  # sdk_bootstrap: a new SDK, the OS version equals the SDK version
    OS = "os"  # packages_tag: OS image only, with the SDK recorded on the branch


class TaggingError(RuntimeError):
    """Tagging cannot proceed; nothing was pushed."""


class TagConflictError(TaggingError):
    """The tag exists on the origin with a different tree; it is left exactly as it is."""


class BranchMovedError(TaggingError):
    """The branch moved on while we tagged its head; the atomic push left neither branch update nor tag."""


@dataclass(frozen=True)
class CIIdentity:
    """Author and committer of version commits (the scripts' ``CI_GIT_AUTHOR`` / ``CI_GIT_EMAIL``)."""

    name: str = "flatcar-ci"
    email: str = "infra+ci@flatcar-linux.org"

    def __post_init__(self) -> None:
        for value in (self.name, self.email):
            if not value or any(ch in value for ch in "<>\n\r\0"):
                raise ValueError(f"CI identity {value!r} is empty or contains '<', '>' or a line break")

    @property
    def signoff(self) -> str:
        return f"Signed-off-by: {self.name} <{self.email}>"


@dataclass(frozen=True)
class ShortcutCandidate:
    """An earlier nightly or release tag on the commit to build, offered to the outputs-exist check."""

    tag: str
    kind: BuildKind
    versionfile: VersionFile


@dataclass(frozen=True)
class TagRequest:
    version: FlatcarVersion
    ref: str
    kind: BuildKind
    commit: str | None = None
    submodule_refs: Mapping[str, str] = field(default_factory=dict)
    force: bool = False
    allow_branch_push: bool = True
    outputs_exist: Callable[[ShortcutCandidate], bool] | None = None
    identity: CIIdentity = field(default_factory=CIIdentity)

    def __post_init__(self) -> None:
        if not isinstance(self.version, FlatcarVersion) or self.version.channel is None:
            raise VersionError("the version to tag must be a channel-prefixed version tag")
        check_ref_name(self.ref)
        if self.commit is not None and not re.fullmatch(r"[0-9a-f]{40}", self.commit):
            raise ValueError(f"commit {self.commit!r} must be a full 40-character lower-case commit id")
        unknown = set(self.submodule_refs) - set(SUBMODULE_PATHS)
        if unknown:
            raise ValueError(
                f"unknown submodule(s) {', '.join(sorted(unknown))}; known: {', '.join(SUBMODULE_PATHS)}"
            )
        for name, ref in self.submodule_refs.items():
            check_ref_name(ref, f"{name} ref")


@dataclass(frozen=True)
class TagResult:
    """What tagging did. ``action`` is ``created``, ``reused`` or ``skipped`` (nightly shortcut)."""

    action: str
    tag: str
    commit: str
    base_commit: str
    tree: str
    layout: str
    versionfile: VersionFile
    branch: str | None = None
    branch_pushed: bool = False
    lost_race: bool = False
    submodules: Mapping[str, str] = field(default_factory=dict)
    message: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "action": self.action,
            "tag": self.tag,
            "commit": self.commit,
            "base_commit": self.base_commit,
            "tree": self.tree,
            "layout": self.layout,
            "branch": self.branch,
            "branch_pushed": self.branch_pushed,
            "lost_race": self.lost_race,
            "submodules": dict(self.submodules),
            "versionfile": self.versionfile.to_dict(),
            "message": self.message,
        }


def tag_version(repo: ScriptsRepo, request: TagRequest) -> TagResult:
    """Create (or reuse, or skip) the version tag of one build. Safe to call again with the same request."""
    with repo.locked():
        return _Tagging(repo, request).run()


class _Tagging:
    def __init__(self, repo: ScriptsRepo, request: TagRequest) -> None:
        self.repo = repo
        self.request = request
        self.tag = request.version.tag

    def run(self) -> TagResult:
        request = self.request
        refs = self.repo.remote_refs()
        target = self.repo.resolve(request.ref, refs)
        base = request.commit or target.commit
        if request.commit and target.kind is not RefKind.COMMIT and request.commit != target.commit:
            log.info(
                "Building commit %s of %s %s (its head is %s)", base, target.kind, target.name, target.commit
            )
        self.repo.ensure_commit(base)
        at_branch_head = target.kind is RefKind.BRANCH and base == target.commit
        branch = target.name if target.kind is RefKind.BRANCH else None
        push_branch = request.allow_branch_push and at_branch_head and request.version.nightly is not None

        branch_versionfile = self.repo.read_versionfile(base)
        if push_branch and not request.force:
            skipped = self._shortcut(refs, base, branch_versionfile)
            if skipped:
                return skipped

        versionfile = self._versionfile(branch_versionfile)
        layout = self.repo.layout(base)
        gitlinks = self._submodule_pins(base) if layout is Layout.SUBMODULES else {}
        message = f"New version: {self.tag}\n"
        if scripts_sign_off(self.repo, base):
            message += f"\n{request.identity.signoff}\n"
        tree, commit = self.repo.make_commit(
            base,
            {VERSIONFILE_PATH: versionfile.render().encode()},
            {SUBMODULE_PATHS[name]: sha for name, sha in gitlinks.items()},
            message,
            (request.identity.name, request.identity.email),
        )
        common = {
            "base_commit": base,
            "tree": tree,
            "layout": str(layout),
            "versionfile": versionfile,
            "branch": branch,
            "submodules": gitlinks,
        }

        if self.tag in refs.tags:
            return self._reuse(refs.tags[self.tag], tree, common, lost_race=False)

        refspecs = [f"{commit}:refs/tags/{self.tag}"]
        lease = None
        if push_branch:
            refspecs.insert(0, f"{commit}:refs/heads/{branch}")
            lease = (f"refs/heads/{branch}", base)
        pushed = self.repo.push(refspecs, lease=lease)
        if any(ref.rejected for ref in pushed) or any(
            ref.up_to_date for ref in pushed if ref.ref.startswith("refs/tags/")
        ):
            return self._after_rejected_push(base, tree, common, push_branch, pushed)
        where = f" and advanced {branch} to it" if push_branch else " (free-standing; no branch pushed)"
        log.info("Created tag %s at %s%s", self.tag, commit, where)
        return TagResult(
            action="created",
            tag=self.tag,
            commit=commit,
            branch_pushed=push_branch,
            message=f"created tag {self.tag} at {commit}{where}",
            **common,
        )

    # -- steps ---------------------------------------------------------------------------------------
    def _versionfile(self, branch_versionfile: VersionFile) -> VersionFile:
        if self.request.kind is BuildKind.FULL:
            return VersionFile.for_full_build(self.request.version)
        return VersionFile.for_os_build(branch_versionfile, self.request.version)

    def _submodule_pins(self, base: str) -> dict[str, str]:
        """Resolve the matching version tag (or the ref given) of each submodule to the commit to pin."""
        urls = self.repo.submodule_urls(base)
        pins: dict[str, str] = {}
        for name in SUBMODULE_PATHS:
            ref = self.request.submodule_refs.get(name, self.tag)
            sub = ScriptsRepo(urls[name], cache_dir=self.repo.cache_dir)
            sub_refs = sub.remote_refs()
            if ref in sub_refs.tags:
                pins[name] = sub_refs.tags[ref]
            elif ref in sub_refs.heads:
                pins[name] = sub_refs.heads[ref]
            elif re.fullmatch(r"[0-9a-f]{40}", ref):
                pins[name] = ref
            else:
                raise TaggingError(
                    f"submodule {name} ({sub.display_url}) has no tag or branch {ref!r} to check out for "
                    f"{self.tag}; create the matching tag there or name the {name} ref explicitly"
                )
            log.info("Pinning %s at %s (%s)", name, pins[name], ref)
        return pins

    def _shortcut(self, refs: RemoteRefs, base: str, branch_versionfile: VersionFile) -> TagResult | None:
        """The nightly shortcut: HEAD carries a nightly/release tag, nothing changed, outputs exist."""
        request = self.request
        for existing in refs.tags_at(base):
            try:
                version = parse_tag(existing)
            except VersionError:
                continue
            if request.kind is BuildKind.FULL:
                eligible = version.channel == "main" and version.is_nightly
            else:
                eligible = (
                    version.channel not in (None, "main")
                    and version.major == request.version.major
                    and (version.is_official or version.is_nightly)
                )
            if not eligible:
                continue
            self.repo.fetch_tag(existing)
            if self.repo.tree_of(f"refs/tags/{existing}") != self.repo.tree_of(base):
                raise TaggingError(
                    f"{existing} is reported at {base} but its tree differs; investigate the origin"
                )
            candidate = ShortcutCandidate(existing, request.kind, branch_versionfile)
            if request.outputs_exist is None:
                log.info("No changes since %s, but no outputs check was given: building", existing)
                return None
            if not request.outputs_exist(candidate):
                log.info("No changes since %s but its outputs are missing: building", existing)
                return None
            message = f"no changes since {existing} and its outputs exist: nightly {self.tag} skipped"
            log.info("Stopping: %s", message)
            return TagResult(
                action="skipped",
                tag=existing,
                commit=base,
                base_commit=base,
                tree=self.repo.tree_of(base),
                layout=str(self.repo.layout(base)),
                versionfile=branch_versionfile,
                branch=self.repo.resolve(request.ref, refs).name,
                message=message,
            )
        return None

    def _reuse(self, tagged: str, tree: str, common: dict, *, lost_race: bool) -> TagResult:
        self.repo.fetch_tag(self.tag)
        existing_tree = self.repo.tree_of(f"refs/tags/{self.tag}")
        if existing_tree != tree:
            raise TagConflictError(
                f"Remote tag {self.tag} exists already and is not equal: it points at {tagged} with tree "
                f"{existing_tree}, this build would tag tree {tree}. The tag is never moved or deleted; "
                "build another version (e.g. another build id) or delete the tag by hand if it is wrong."
            )
        how = "created concurrently by another tagger" if lost_race else "already on the origin"
        log.info("Reusing existing tag %s at %s (%s)", self.tag, tagged, how)
        return TagResult(
            action="reused",
            tag=self.tag,
            commit=tagged,
            lost_race=lost_race,
            message=f"reused existing tag {self.tag} at {tagged} ({how})",
            **common,
        )

    def _after_rejected_push(
        self, base: str, tree: str, common: dict, push_branch: bool, pushed
    ) -> TagResult:
        """Someone else pushed first: reuse their identical tag, or say exactly what moved."""
        refs = self.repo.remote_refs()
        if self.tag in refs.tags:
            return self._reuse(refs.tags[self.tag], tree, common, lost_race=True)
        if push_branch:
            branch = common["branch"]
            now = refs.heads.get(branch)
            raise BranchMovedError(
                f"branch {branch} moved from {base} to {now} while tagging {self.tag}; the atomic push was "
                "rejected, so neither the branch nor the tag changed on the origin. Run the nightly again to "
                "build the new head."
            )
        details = "; ".join(f"{ref.ref}: {ref.summary}" for ref in pushed)
        raise GitError(f"push of {self.tag} was rejected: {details}")


def nightly_version(
    repo: ScriptsRepo, ref: str, kind: BuildKind, when, *, commit: str | None = None
) -> FlatcarVersion:
    """The nightly version of ``ref`` for a run time: main's day number for full builds, the branch's
    ``FLATCAR_VERSION_ID`` (channel from its minor number) for OS-only builds."""
    from .nightly import branch_nightly, main_nightly

    if kind is BuildKind.FULL:
        return main_nightly(when)
    with repo.locked():
        base = commit or repo.resolve(ref, repo.remote_refs()).commit
        repo.ensure_commit(base)
        return branch_nightly(repo.read_versionfile(base).os.vernum, when)
