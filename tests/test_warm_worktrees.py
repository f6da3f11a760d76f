"""Pooled work trees (``runner.pooled_worktrees``): a warm step's tree is the tree a fresh checkout gives.

The wrapper moves a pooled tree to the next tag with a fresh ``.git``, a forced checkout that writes only
the files that differ and ``git clean -ffdx``. Proven here with the local runner against a real origin:
a build leaves its tree dirty (tracked files changed, chmod-ed and deleted, index flags set, local refs
and config, a nested repository, junk in a submodule's directory, untracked and ignored files left as by
a build killed hard), then the next step moves the tree to a tag that changes, adds and deletes files,
changes modes, replaces a file by a directory and moves the submodule. What that step sees (a copy of its
tree, ``.git`` included) must equal what a step in a fresh work tree (pooling off) sees: every path, type,
mode, byte and link target, and git's view (HEAD, refs, config, index flags, status). Also: two steps at
once get two trees, each locked while in use.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from gitrepos import commit_file, git, make_origins

from flatcar_airflow.runners.base import Job
from flatcar_airflow.runners.local import LocalRunner

STEP = r"""# >>> This file is supposed to be SOURCED from the repository ROOT. <<<
function dirty() {
    echo "changed by the build" >> tracked.txt
    chmod +x data/plain.txt
    rm -f doomed.txt
    git update-index --assume-unchanged tracked.txt
    git tag left-by-the-build
    git branch left-by-the-build
    git config user.name left-by-the-build
    git stash list >/dev/null
    mkdir -p nested && git -C nested init -q && echo n > nested/file
    echo junk > sub/leftover
    echo "echo cleanup-ran" > ci-cleanup.sh
    echo "dirty done"
}
function snapshot() {
    mkdir -p "$SNAPSHOTS"
    cp -a . "$SNAPSHOTS/$1"
    echo "snapshot $1 of $(pwd)"
}
function hold() {
    echo "tree $(pwd)"
    sleep "${HOLD:-2}"
}
"""


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    """Tags warm-a and warm-b of one branch, with every kind of change a tag move can bring."""
    origins = make_origins(tmp_path_factory.mktemp("warm") / "origins")
    work = origins.work
    commit_file(work, "ci-automation/warm.sh", STEP, "warm step")
    for path, content in {
        "tracked.txt": "tracked\n",
        "doomed.txt": "deleted by the build\n",
        "data/plain.txt": "plain\n",
        "data/tool.sh": "#!/bin/sh\necho tool\n",
        "changes.txt": "a\n",
        "removed-in-b.txt": "gone in b\n",
        "swap": "a file in a, a directory in b\n",
        ".gitignore": "build/\n*.log\n",
    }.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(content)
    os.chmod(work / "data/tool.sh", 0o755)  # noqa: S103 - an executable in the repository
    os.symlink("data/plain.txt", work / "link")
    git("add", "-A", "--", ".", ":!sub", cwd=work)
    sub_a = git("rev-parse", "HEAD", cwd=work)
    git("update-index", "--add", "--cacheinfo", f"160000,{sub_a},sub", cwd=work)
    git("commit", "-q", "-m", "tag a", cwd=work)
    git("tag", "warm-a", cwd=work)
    (work / "changes.txt").write_text("b\n")
    (work / "added-in-b.txt").write_text("new in b\n")
    (work / "removed-in-b.txt").unlink()
    os.chmod(work / "data/tool.sh", 0o644)
    os.chmod(work / "data/plain.txt", 0o755)  # noqa: S103 - a mode change between tags
    (work / "swap").unlink()
    (work / "swap").mkdir()
    (work / "swap/inner.txt").write_text("inner\n")
    os.unlink(work / "link")
    os.symlink("changes.txt", work / "link")
    git("add", "-A", "--", ".", ":!sub", cwd=work)
    sub_b = git("rev-parse", "HEAD~1", cwd=work)
    git("update-index", "--add", "--cacheinfo", f"160000,{sub_b},sub", cwd=work)
    git("commit", "-q", "-m", "tag b", cwd=work)
    git("tag", "warm-b", cwd=work)
    git("push", "-q", "origin", "main", "warm-a", "warm-b", cwd=work)
    return origins


def _job(origin, ref: str, function: str, *, key: str, attempt: int = 1, **env: str) -> Job:
    return Job(
        key=key,
        attempt=attempt,
        origin=origin.url,
        ref=ref,
        script="ci-automation/warm.sh",
        function=function,
        args=list(env.pop("args", "").split()),
        env=env,
        cache={"server": "cache.example", "user": "builder", "path_prefix": "/srv/cache"},
    )


def _run(runner: LocalRunner, job: Job) -> list[str]:
    lines: list[str] = []
    outcome = runner.run(job, lambda block: lines.extend(block.split("\n")), lambda: None)
    assert outcome.rc == 0, lines
    return lines


def _tree(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` but ``.git``: (type, permission bits, content or link target)."""
    found: dict[str, tuple] = {}
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not (Path(directory) == root and d == ".git")]
        for name in dirs + files:
            path = Path(directory) / name
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                found[str(path.relative_to(root))] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[str(path.relative_to(root))] = ("dir", stat.S_IMODE(info.st_mode))
            else:
                found[str(path.relative_to(root))] = ("file", stat.S_IMODE(info.st_mode), path.read_bytes())
    return found


def _git_view(tree: Path) -> dict[str, str]:
    return {
        "head": git("rev-parse", "HEAD", cwd=tree),
        "symbolic-head": git("symbolic-ref", "-q", "HEAD", cwd=tree, check=False),
        "refs": git("for-each-ref", "--format=%(objectname) %(refname)", cwd=tree),
        "config": git("config", "--local", "--list", cwd=tree),
        "flags": git("ls-files", "-v", "--stage", cwd=tree),
        "status": git("status", "--porcelain", "--ignored", "--untracked-files=all", cwd=tree),
        "stash": git("stash", "list", cwd=tree),
    }


def test_a_warm_pooled_tree_is_byte_identical_to_a_fresh_checkout(origin, tmp_path):
    snapshots = tmp_path / "snapshots"
    pooled = LocalRunner(root=str(tmp_path / "pooled"))
    fresh = LocalRunner(root=str(tmp_path / "fresh"), pooled_worktrees=False)

    lines = _run(pooled, _job(origin, "warm-a", "dirty", key="warm-1"))
    assert "dirty done" in lines and "cleanup-ran" in lines
    tree = tmp_path / "pooled/pool" / next((tmp_path / "pooled/pool").iterdir()).name / "0"
    assert (tree / ".git").is_dir() and not (tree / "ci-cleanup.sh").exists()  # outputs removed at the end
    # What a build killed hard leaves (its wrapper never removed it): untracked and ignored files.
    (tree / "untracked.txt").write_text("stray\n")
    (tree / "build/out").mkdir(parents=True)
    (tree / "build/out/image.bin").write_bytes(b"\0" * 4096)
    (tree / "debug.log").write_text("ignored\n")
    (tree / "swap.orig").write_text("stray next to a path that changes type\n")

    lines = _run(
        pooled, _job(origin, "warm-b", "snapshot", key="warm-2", args="warm-b", SNAPSHOTS=str(snapshots))
    )
    assert any("pooled work tree" in line and "moved to warm-b" in line for line in lines), lines
    assert f"snapshot warm-b of {tree}" in lines
    _run(fresh, _job(origin, "warm-b", "snapshot", key="fresh-b", args="fresh-b", SNAPSHOTS=str(snapshots)))
    # Back to a, after a step at b: the other direction of every change.
    _run(pooled, _job(origin, "warm-a", "snapshot", key="warm-3", args="warm-a", SNAPSHOTS=str(snapshots)))
    _run(fresh, _job(origin, "warm-a", "snapshot", key="fresh-a", args="fresh-a", SNAPSHOTS=str(snapshots)))

    for tag in ("a", "b"):
        warm, cold = snapshots / f"warm-{tag}", snapshots / f"fresh-{tag}"
        assert _tree(warm) == _tree(cold), tag
        assert _git_view(warm) == _git_view(cold), tag
    b = _tree(snapshots / "warm-b")
    assert b["swap"][0] == "dir" and b["sub"] == ("dir", b["sub"][1]) and "sub/leftover" not in b
    assert b["data/plain.txt"][1] & 0o111 and not b["data/tool.sh"][1] & 0o111
    assert "added-in-b.txt" in b and "removed-in-b.txt" not in b and "untracked.txt" not in b
    assert _git_view(snapshots / "warm-b")["status"] == ""  # the cache override stays hidden from git
    assert not list((tmp_path / "pooled").glob("workspaces/*"))


def test_concurrent_steps_get_their_own_locked_trees(origin, tmp_path):
    import fcntl

    runner_root = tmp_path / "root"
    results: dict[str, list[str]] = {}

    def step(name: str) -> None:
        results[name] = _run(LocalRunner(root=str(runner_root)), _job(origin, "warm-a", "hold", key=name))

    threads = [threading.Thread(target=step, args=(name,)) for name in ("one", "two")]
    for thread in threads:
        thread.start()
    locked: list[str] = []
    while any(thread.is_alive() for thread in threads):
        for lock_file in runner_root.glob("pool/*/*.lock"):
            with open(lock_file, "a") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(lock, fcntl.LOCK_UN)
                except BlockingIOError:
                    locked.append(lock_file.name)
        threading.Event().wait(0.1)
    for thread in threads:
        thread.join()

    trees = {next(line for line in lines if line.startswith("tree ")) for lines in results.values()}
    assert len(trees) == 2, trees  # two slots of the pool, never one tree for two steps
    assert all("/pool/" in tree for tree in trees)
    assert {"0.lock", "1.lock"} <= set(locked)  # each held while its step ran
