"""Git access to the scripts repository for tagging: only what tagging needs, never a full clone.

The scripts repo has ~36,000 commits and ~450 tags. Tagging one build needs one commit's tree, the refs of
the origin, and (for an existing tag) that tag's commit. So this module keeps one small bare cache
repository per origin URL and per host, and per run it:

* lists the origin's branches and tags in one round trip (``git ls-remote``);
* fetches the commit to build with ``--depth=1`` only when the cache does not hold it already;
* builds the new tree and commit with plumbing (a temporary index; no work tree, no checkout);
* pushes with ``git push --atomic`` so that a branch update and its tag land together or not at all.

All access to the cache is serialized by a file lock, so several tagging tasks on one host are safe.
Git output that could contain a credential from the URL is redacted before it is logged or raised.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import posixpath
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from .versionfile import VERSIONFILE_PATH, VersionFile

if TYPE_CHECKING:
    import git  # GitPython (~300 ms to import) is imported where git runs, not when DAG files are parsed

__all__ = [
    "SUBMODULE_PATHS",
    "GitError",
    "Layout",
    "RefKind",
    "RemoteRefs",
    "ResolvedRef",
    "ScriptsRepo",
    "check_ref_name",
    "check_repo_url",
    "checkout_layout",
    "mask_url_credentials",
    "redact_url",
]

log = logging.getLogger(__name__)

#: Submodules of the seed's era (until April 2023), by name, at these paths in the scripts repo.
SUBMODULE_PATHS = {
    "coreos-overlay": "sdk_container/src/third_party/coreos-overlay",
    "portage-stable": "sdk_container/src/third_party/portage-stable",
}
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_FETCHED = "refs/flatcar-airflow/fetched"
#: How many fetched commits and tags the cache keeps refs for.
KEEP_REFS = 32
_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")


class GitError(RuntimeError):
    """A git operation on the scripts repository failed (message has credentials redacted)."""


class Layout(StrEnum):
    """How a scripts repo commit holds coreos-overlay and portage-stable."""

    IN_TREE = "in-tree"  # today: plain directories
    SUBMODULES = "submodules"  # the seed's era: gitlinks, pinned by the version commit


class RefKind(StrEnum):
    BRANCH = "branch"
    TAG = "tag"
    COMMIT = "commit"


def mask_url_credentials(url: str) -> None:
    """Register a URL's password or token (``https://user:token@…``, ``https://token@…``) with the masker.

    For a ``scripts_repo`` given with credentials: called where the URL is first known in a task
    process (before its template fields are rendered and stored), it keeps the token out of the
    rendered fields and the logs. A URL without a user part registers nothing.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return
    from airflow.sdk.log import mask_secret

    for secret in (parts.password, parts.username if parts.password is None else None):
        if secret:
            mask_secret(secret)


def redact_url(url: str) -> str:
    """Drop a password or token from a URL's user part (``https://user:token@host`` → ``https://user:***@host``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


# What git may be pointed at: https/http/ssh/git/file URLs, scp-like user@host:path, paths.
_REPO_URL = re.compile(
    r"(?:(?:https?|ssh|git|file)://\S+"  # URLs
    r"|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:\S+"  # user@host:path
    r"|/\S*|[A-Za-z0-9._][A-Za-z0-9._/-]*)"  # paths
)


def check_repo_url(url: str, what: str = "scripts repository URL") -> str:
    """Validate a repository URL before git sees it: no option (``-…``), no ``ext::``/``fd::`` transport
    (git's ``ext::<command>`` runs a command), no whitespace or control character."""
    if not isinstance(url, str) or not url:
        raise ValueError(f"{what} is empty")
    shown = redact_url(url)[:120]
    if url.startswith("-"):
        raise ValueError(f"{what} {shown!r} starts with '-' (git would take it for an option)")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise ValueError(f"{what} {shown!r} contains whitespace or a control character")
    if "::" in url.split("/", 1)[0] or not _REPO_URL.fullmatch(url):
        raise ValueError(
            f"{what} {shown!r} must be an https://, ssh://, git:// or file:// URL, user@host:path, or a "
            "path (no ext:: or fd:: transport)"
        )
    return url


def check_ref_name(ref: str, what: str = "ref") -> str:
    """Validate a branch, tag or commit name given by a user before it reaches git."""
    if not isinstance(ref, str) or not ref:
        raise ValueError(f"{what} is empty")
    if len(ref) > 255:
        raise ValueError(f"{what} {ref[:40]!r}… is longer than 255 characters")
    if not _REF_RE.fullmatch(ref):
        raise ValueError(
            f"{what} {ref!r} must start with a letter or digit and contain only letters, digits, '.', '_', "
            "'/' and '-'"
        )
    if ".." in ref or "//" in ref or ref.endswith(("/", ".", ".lock")) or "/." in ref:
        raise ValueError(f"{what} {ref!r} is not a valid git ref name ('..', '//', '/.', or a bad ending)")
    return ref


@dataclass(frozen=True)
class RemoteRefs:
    """The origin's branches and tags, tags peeled to the commits they point at."""

    heads: Mapping[str, str]
    tags: Mapping[str, str]

    @classmethod
    def parse(cls, ls_remote_output: str) -> RemoteRefs:
        heads: dict[str, str] = {}
        tags: dict[str, str] = {}
        peeled: dict[str, str] = {}
        for line in ls_remote_output.splitlines():
            sha, _, name = line.partition("\t")
            if name.startswith("refs/heads/"):
                heads[name.removeprefix("refs/heads/")] = sha
            elif name.startswith("refs/tags/") and name.endswith("^{}"):
                peeled[name.removeprefix("refs/tags/").removesuffix("^{}")] = sha
            elif name.startswith("refs/tags/"):
                tags[name.removeprefix("refs/tags/")] = sha
        tags.update(peeled)
        return cls(heads=heads, tags=tags)

    def tags_at(self, commit: str) -> list[str]:
        return sorted(name for name, sha in self.tags.items() if sha == commit)


@dataclass(frozen=True)
class ResolvedRef:
    kind: RefKind
    name: str
    commit: str


@dataclass
class ScriptsRepo:
    """One scripts repository origin, reached through a per-host bare cache.

    ``url`` is anything ``git`` can fetch from and push to (``https://``, ``ssh://``, a path).
    ``cache_dir`` holds the caches; its default is ``$FLATCAR_AIRFLOW_CACHE`` or ``~/.cache/flatcar-airflow``.
    """

    url: str
    cache_dir: Path | None = None
    _repo: git.Repo | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        check_repo_url(self.url)
        root = self.cache_dir or Path(
            os.environ.get("FLATCAR_AIRFLOW_CACHE") or Path.home() / ".cache" / "flatcar-airflow"
        )
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        self.cache_dir = Path(root)
        self.path = self.cache_dir / "tagging" / f"{digest}.git"
        # Imported here: the DAG file imports this module (through the configuration) at every parse.
        from filelock import FileLock

        self._lock = FileLock(str(self.path) + ".lock")

    # -- infrastructure ------------------------------------------------------------------------------
    @property
    def display_url(self) -> str:
        return redact_url(self.url)

    @contextmanager
    def locked(self) -> Iterator[ScriptsRepo]:
        """Hold the host-wide lock of this origin's cache (re-entrant within one thread)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            yield self

    @property
    def repo(self) -> git.Repo:
        import git

        if self._repo is None:
            if (self.path / "HEAD").exists():
                self._repo = git.Repo(self.path)
            else:
                self._repo = git.Repo.init(self.path, bare=True)
                with self._repo.config_writer() as config:
                    config.set_value("gc", "autoDetach", "false")
                    config.set_value("fetch", "writeCommitGraph", "false")
        return self._repo

    def git(self, *args: str, env: Mapping[str, str] | None = None, **kwargs) -> str:
        """Run git in the cache; failures become :class:`GitError` with the URL's secret redacted."""
        status, stdout, stderr = self.repo.git.execute(
            ["git", *args], env=dict(env or {}), with_extended_output=True, with_exceptions=False, **kwargs
        )
        if status != 0:
            raise GitError(self._redact(f"git {args[0]} failed (exit {status}): {stderr.strip()}"))
        return stdout

    def _redact(self, text: str) -> str:
        return text.replace(self.url, self.display_url) if self.url != self.display_url else text

    # -- remote state --------------------------------------------------------------------------------
    def remote_refs(self) -> RemoteRefs:
        """Branches and tags of the origin, fresh, in one round trip."""
        return RemoteRefs.parse(self.git("ls-remote", "--heads", "--tags", self.url))

    def resolve(self, ref: str, refs: RemoteRefs) -> ResolvedRef:
        """Name a branch, tag or full commit id of the origin; unknown names are refused."""
        check_ref_name(ref)
        name = ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
        if not ref.startswith("refs/tags/") and name in refs.heads:
            return ResolvedRef(RefKind.BRANCH, name, refs.heads[name])
        if not ref.startswith("refs/heads/") and name in refs.tags:
            return ResolvedRef(RefKind.TAG, name, refs.tags[name])
        if _SHA_RE.fullmatch(ref):
            return ResolvedRef(RefKind.COMMIT, ref, ref)
        raise GitError(
            f"{ref!r} is neither a branch nor a tag of {self.display_url}, nor a full 40-character commit id"
        )

    # -- objects -------------------------------------------------------------------------------------
    def has_commit(self, sha: str) -> bool:
        try:
            self.git("cat-file", "-e", f"{sha}^{{commit}}")
        except GitError:
            return False
        return True

    def ensure_commit(self, sha: str) -> None:
        """Make one commit (and its tree) available in the cache, fetching it shallowly if missing.

        Every fetched commit keeps a ref (the newest :data:`KEEP_REFS`), so the next fetch tells the origin
        what the cache has and receives only the difference, and ``git gc`` can drop what is no longer kept.
        """
        if self.has_commit(sha):
            return
        log.info("Fetching commit %s from %s (depth 1)", sha, self.display_url)
        self.git("fetch", "--quiet", "--no-tags", "--depth=1", self.url, f"+{sha}:{_FETCHED}/{sha}")
        if not self.has_commit(sha):
            raise GitError(f"commit {sha} is not available from {self.display_url}")
        self._prune_refs(_FETCHED, "-committerdate")

    def _prune_refs(self, prefix: str, sort: str) -> None:
        refs = self.git("for-each-ref", f"--sort={sort}", "--format=%(refname)", prefix).split()
        for ref in refs[KEEP_REFS:]:
            self.git("update-ref", "-d", ref)

    def tree_of(self, commit: str) -> str:
        return self.git("rev-parse", f"{commit}^{{tree}}")

    def read_file(self, commit: str, path: str) -> bytes:
        import git

        try:
            return self.repo.git.execute(
                ["git", "cat-file", "blob", f"{commit}:{path}"],
                stdout_as_string=False,
                strip_newline_in_stdout=False,
            )
        except git.GitCommandError:
            raise GitError(f"commit {commit} has no file {path}") from None

    def read_versionfile(self, commit: str) -> VersionFile:
        return VersionFile.parse(self.read_file(commit, VERSIONFILE_PATH))

    def gitlinks(self, commit: str) -> dict[str, str]:
        """The submodule commits a scripts commit pins, by submodule name (empty for in-tree layouts)."""
        output = self.git("ls-tree", commit, "--", *SUBMODULE_PATHS.values())
        found: dict[str, str] = {}
        for line in output.splitlines():
            meta, _, path = line.partition("\t")
            mode, kind, sha = meta.split()
            for name, sub_path in SUBMODULE_PATHS.items():
                if path == sub_path and mode == "160000" and kind == "commit":
                    found[name] = sha
        return found

    def layout(self, commit: str) -> Layout:
        """Which layout a commit has: both submodules as gitlinks, or today's in-tree directories."""
        links = self.gitlinks(commit)
        if len(links) == len(SUBMODULE_PATHS):
            return Layout.SUBMODULES
        if links:
            raise GitError(
                f"commit {commit} pins only {', '.join(links)} as a submodule; expected both or none"
            )
        return Layout.IN_TREE

    def submodule_urls(self, commit: str) -> dict[str, str]:
        """Submodule origin URLs from the commit's .gitmodules, relative URLs resolved against our URL."""
        output = self.git(
            "config", "--blob", f"{commit}:.gitmodules", "--get-regexp", r"^submodule\..*\.(path|url)$"
        )
        paths: dict[str, str] = {}
        urls: dict[str, str] = {}
        for line in output.splitlines():
            key, _, value = line.partition(" ")
            section, _, attribute = key.rpartition(".")
            (paths if attribute == "path" else urls)[section] = value
        by_path = {paths[section]: urls.get(section, "") for section in paths}
        result = {}
        for name, sub_path in SUBMODULE_PATHS.items():
            url = by_path.get(sub_path)
            if not url:
                raise GitError(f".gitmodules of {commit} has no URL for {sub_path}")
            result[name] = resolve_relative_url(self.url, url)
        return result

    def make_commit(
        self,
        parent: str,
        files: Mapping[str, bytes],
        gitlinks: Mapping[str, str],
        message: str,
        author: tuple[str, str],
    ) -> tuple[str, str]:
        """Create (tree, commit) = parent's tree with ``files`` replaced and ``gitlinks`` repointed.

        Plumbing on a temporary index: no work tree, so it costs milliseconds even for a big tree.
        """
        with tempfile.TemporaryDirectory(prefix="flatcar-airflow-index-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self.git("read-tree", parent, env=env)
            for path, content in files.items():
                blob = self._hash_blob(content)
                self.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
            for path, sha in gitlinks.items():
                self.git("update-index", "--add", "--cacheinfo", f"160000,{sha},{path}", env=env)
            tree = self.git("write-tree", env=env)
        name, email = author
        identity = {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }
        with _stdin(message) as stdin:
            commit = self.git("commit-tree", tree, "-p", parent, "-F", "-", env=identity, istream=stdin)
        return tree, commit

    def _hash_blob(self, content: bytes) -> str:
        with _stdin(content) as stdin:
            return self.git("hash-object", "-w", "--stdin", istream=stdin)

    def fetch_tag(self, tag: str) -> None:
        """Fetch one tag of the origin (shallow) to compare its tree."""
        self.git("fetch", "--quiet", "--no-tags", "--depth=1", self.url, f"+refs/tags/{tag}:refs/tags/{tag}")
        self._prune_refs("refs/tags", "-creatordate")

    def push(self, refspecs: list[str], *, lease: tuple[str, str] | None = None) -> list[PushedRef]:
        """``git push --atomic --porcelain``; returns one :class:`PushedRef` per refspec, rejected or not."""
        args = ["push", "--porcelain", "--atomic"]
        if lease:
            args.append(f"--force-with-lease={lease[0]}:{lease[1]}")
        status, stdout, stderr = self.repo.git.execute(
            ["git", *args, self.url, *refspecs], with_extended_output=True, with_exceptions=False
        )
        refs = PushedRef.parse(stdout)
        if status != 0 and not any(ref.rejected for ref in refs):
            raise GitError(self._redact(f"git push failed (exit {status}): {stderr.strip()}"))
        return refs

    # -- history -------------------------------------------------------------------------------------
    def commit_at(self, branch: str, when: dt.datetime, refs: RemoteRefs | None = None) -> str:
        """The commit a branch pointed at, as best git can tell, at ``when``: the newest first-parent
        commit committed at or before it. Fetches history only as deep as needed (a month, a year, all).
        """
        check_ref_name(branch, "branch")
        refs = refs or self.remote_refs()
        if branch not in refs.heads:
            raise GitError(f"{branch!r} is not a branch of {self.display_url}")
        head = refs.heads[branch]
        stamp = when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        local_ref = f"refs/flatcar-airflow/history/{branch}"
        for depth_args in (
            [f"--shallow-since={(when - dt.timedelta(days=31)).astimezone(dt.UTC):%Y-%m-%d}"],
            [f"--shallow-since={(when - dt.timedelta(days=366)).astimezone(dt.UTC):%Y-%m-%d}"],
            ["--unshallow"] if (self.path / "shallow").exists() else [],
        ):
            if self.has_commit(head) and self._rev_before(head, stamp):
                break
            try:
                self.git("fetch", "--quiet", "--no-tags", *depth_args, self.url, f"+{head}:{local_ref}")
            except GitError as err:
                if "no commits selected" not in str(err) and "shallow" not in str(err):
                    raise
        found = self._rev_before(head, stamp)
        if not found:
            raise GitError(f"branch {branch} of {self.display_url} has no commit at or before {stamp}")
        return found

    def _rev_before(self, head: str, stamp: str) -> str:
        try:
            return self.git("rev-list", "-1", "--first-parent", f"--before={stamp}", head)
        except GitError:
            return ""


@dataclass(frozen=True)
class PushedRef:
    """One line of ``git push --porcelain``: flag, destination ref, summary."""

    flag: str
    ref: str
    summary: str

    @property
    def rejected(self) -> bool:
        return self.flag == "!"

    @property
    def up_to_date(self) -> bool:
        return self.flag == "="

    @classmethod
    def parse(cls, output: str) -> list[PushedRef]:
        refs = []
        for line in output.splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and len(parts[0]) == 1:
                refs.append(cls(parts[0], parts[1].rpartition(":")[2], parts[2]))
        return refs


def checkout_layout(path: str | os.PathLike[str]) -> Layout:
    """The layout of a scripts checkout (a work tree, e.g. a step's workspace) at its HEAD."""
    import git

    tree = git.Repo(path).head.commit.tree
    links = []
    for sub_path in SUBMODULE_PATHS.values():
        try:
            entry = tree[sub_path]
        except KeyError:
            continue
        if entry.mode == 0o160000:
            links.append(sub_path)
    if len(links) == len(SUBMODULE_PATHS):
        return Layout.SUBMODULES
    if links:
        raise GitError(f"checkout {path} pins only {', '.join(links)} as a submodule; expected both or none")
    return Layout.IN_TREE


def resolve_relative_url(base: str, url: str) -> str:
    """Resolve a submodule URL like ``../coreos-overlay.git`` against the superproject URL, as git does."""
    if not url.startswith(("./", "../")):
        return url
    parts = urlsplit(base)
    if parts.scheme and parts.netloc:
        path = posixpath.normpath(posixpath.join(parts.path.rstrip("/"), url))
        return urlunsplit(parts._replace(path=path))
    return posixpath.normpath(posixpath.join(base.rstrip("/"), url))


@contextmanager
def _stdin(data: str | bytes) -> Iterator[IO[bytes]]:
    """A file object for ``istream`` (GitPython passes it to the process's standard input)."""
    with tempfile.TemporaryFile() as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
        handle.seek(0)
        yield handle
