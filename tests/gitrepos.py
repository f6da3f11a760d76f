"""Real git repositories for the tests: bare origins shaped like Flatcar's scripts repo.

Two layouts: today's (coreos-overlay and portage-stable as plain directories) and the seed era's (both
as submodules with their own bare origins and version tags). Each origin has ``main`` and a maintenance
branch ``flatcar-4593`` whose version.txt records an OS-only build on SDK 4593.0.0.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from flatcar_airflow.demo.origin import BRANCH_VERSIONFILE, MAIN_VERSIONFILE, VERSIONFILE

__all__ = ["BRANCH_VERSIONFILE", "MAIN_VERSIONFILE", "VERSIONFILE", "git", "make_origins"]

OVERLAY = "sdk_container/src/third_party/coreos-overlay"
PORTAGE = "sdk_container/src/third_party/portage-stable"

T0 = dt.datetime(2026, 8, 1, 12, 0, tzinfo=dt.UTC)


def git(
    *args: str,
    cwd: Path | str | None = None,
    date: dt.datetime | None = None,
    check: bool = True,
    input: str | None = None,
) -> str:
    """Run git for a test (never through the code under test); returns stripped stdout."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Test Dev",
        "GIT_AUTHOR_EMAIL": "dev@example.org",
        "GIT_COMMITTER_NAME": "Test Dev",
        "GIT_COMMITTER_EMAIL": "dev@example.org",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    if date is not None:
        stamp = date.strftime("%Y-%m-%dT%H:%M:%S+0000")
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = stamp
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout.strip()


def commit_file(work: Path, path: str, content: str, message: str, date: dt.datetime | None = None) -> str:
    target = work / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content)
    git("add", path, cwd=work)
    git("commit", "-q", "-m", message, cwd=work, date=date)
    return git("rev-parse", "HEAD", cwd=work)


@dataclass
class Origins:
    """A scripts origin (and, in the submodule layout, its submodule origins) plus a work clone."""

    root: Path
    scripts: Path
    work: Path
    layout: str
    submodules: dict[str, Path] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return str(self.scripts)

    def head(self, branch: str) -> str:
        return git("rev-parse", f"refs/heads/{branch}", cwd=self.scripts)

    def tag_commit(self, tag: str) -> str:
        return git("rev-parse", f"refs/tags/{tag}^{{commit}}", cwd=self.scripts)

    def tags(self) -> list[str]:
        return git("tag", "--list", cwd=self.scripts).split()

    def show(self, rev: str, path: str) -> str:
        return git("show", f"{rev}:{path}", cwd=self.scripts)

    def push_change(self, branch: str, path: str, content: str, date: dt.datetime | None = None) -> str:
        """A developer pushes a commit to a branch of the origin."""
        git("fetch", "-q", "origin", cwd=self.work)
        git("checkout", "-q", "-B", branch, f"origin/{branch}", cwd=self.work)
        sha = commit_file(self.work, path, content, f"change {path}", date=date)
        git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=self.work)
        return sha


def _bare(path: Path) -> Path:
    git("init", "-q", "--bare", "-b", "main", str(path))
    return path


def make_origins(root: Path, layout: str = "in-tree") -> Origins:
    """Create the origins; history: three commits on main, one branch-off for flatcar-4593."""
    root.mkdir(parents=True, exist_ok=True)
    scripts = _bare(root / "scripts.git")
    work = root / "work"
    git("clone", "-q", str(scripts), str(work))
    git("checkout", "-q", "-b", "main", cwd=work)
    submodules: dict[str, Path] = {}
    commit_file(
        work,
        "ci-automation/ci-config.env",
        'BUILDCACHE_SERVER="${BUILDCACHE_SERVER:-bincache}"\n',
        "ci-automation",
        date=T0,
    )
    if layout == "submodules":
        for name, path in (("coreos-overlay", OVERLAY), ("portage-stable", PORTAGE)):
            origin = _bare(root / f"{name}.git")
            sub_work = root / f"{name}-work"
            git("clone", "-q", str(origin), str(sub_work))
            git("checkout", "-q", "-b", "main", cwd=sub_work)
            commit_file(sub_work, "README", f"{name}\n", "initial", date=T0)
            git("push", "-q", "origin", "main", cwd=sub_work)
            submodules[name] = origin
            git(
                "-c",
                "protocol.file.allow=always",
                "submodule",
                "add",
                "-q",
                "-b",
                "main",
                str(origin),
                path,
                cwd=work,
            )
        git("commit", "-q", "-m", "submodules", cwd=work, date=T0)
    else:
        commit_file(work, f"{OVERLAY}/profiles/repo_name", "coreos-overlay\n", "overlay", date=T0)
        commit_file(work, f"{PORTAGE}/profiles/repo_name", "portage-stable\n", "portage", date=T0)
    commit_file(
        work, VERSIONFILE, BRANCH_VERSIONFILE, "New version: stable-4593.2.4", date=T0 + dt.timedelta(hours=1)
    )
    git("branch", "flatcar-4593", cwd=work)
    commit_file(
        work,
        VERSIONFILE,
        MAIN_VERSIONFILE,
        "New version: main-4798.0.0-nightly-20260820-2100",
        date=T0 + dt.timedelta(hours=2),
    )
    git("push", "-q", "origin", "main", "flatcar-4593", cwd=work)
    return Origins(root=root, scripts=scripts, work=work, layout=layout, submodules=submodules)


def tag_submodules(origins: Origins, tag: str) -> dict[str, str]:
    """Give both submodule origins a tag ``tag`` on a new commit (as Flatcar tagged them per version)."""
    pins = {}
    for name in origins.submodules:
        sub_work = origins.root / f"{name}-work"
        sha = commit_file(sub_work, "VERSION", f"{tag}\n", f"version {tag}")
        git("tag", tag, cwd=sub_work)
        git("push", "-q", "origin", "main", tag, cwd=sub_work)
        pins[name] = sha
    return pins


def assert_nothing_of_the_step_left(root: Path) -> None:
    """What "nothing left" means with pooled work trees: no fresh work tree is left, and the pooled trees,
    which stay by design (the next step moves one to its tag), hold nothing the step added (no untracked or
    ignored file, so no outputs, no ci-cleanup.sh), are claimed by no attempt and locked by no process."""
    import fcntl

    workspaces = root / "workspaces"
    assert not workspaces.exists() or list(workspaces.iterdir()) == []
    for tree in sorted(p for p in (root / "pool").glob("*/*") if p.is_dir()):
        assert tree.name.isdigit(), f"a stray directory in the pool: {tree}"
        assert not Path(f"{tree}.owner").exists(), f"{tree} is still claimed"
        status = git("status", "--porcelain", "--ignored", "--untracked-files=all", cwd=tree)
        assert not [line for line in status.splitlines() if line[:2] in ("??", "!!")], status
        with open(f"{tree}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if a process still holds the tree
