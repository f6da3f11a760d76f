#!/usr/bin/env python3
"""Benchmark: tagging a build in a scripts repository the size of Flatcar's (not a test).

What it measures, wall time per call of :func:`flatcar_airflow.tagging.tag_version` (a dev build on
``main``: the tag is pushed free-standing, the branch is not pushed):

* ``cold``: an empty cache directory each time (the first tagging on a build host);
* ``warm``: one cache directory reused, a new tag each time (main has not moved);
* ``warm, main moved``: like warm, but main gained a commit before each call (every night in real life);
* ``reuse``: the tag exists with the identical tree (a retried task), warm cache;
* ``reuse, cold cache``: the same on another host (empty cache);
* for comparison: ``git clone --bare`` (what a full clone per run would cost) and ``git clone --depth=1``.

The origin is a bare repository reached through a ``file://`` URL, so git uses its pack protocol as it
would over the network (no hard-linked local clone) but no network time is included. By default it is a
synthetic repository shaped like flatcar/scripts (``git fast-import``; cached under ``benchmarks/.work``
keyed by the parameters); ``--origin PATH`` uses a copy of an existing bare repository instead, for
example a mirror of flatcar/scripts. Each run works on a fresh copy of the origin, which it deletes at
the end, so the origin given is never written to.

    .venv/bin/python benchmarks/tagging.py [--commits 36000] [--tags 450] [--files 3000] [--json]
    .venv/bin/python benchmarks/tagging.py --origin /path/to/scripts.git
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flatcar_airflow.scripts_repo import ScriptsRepo
from flatcar_airflow.tagging import BuildKind, TagRequest, tag_version
from flatcar_airflow.versionfile import VERSIONFILE_PATH
from flatcar_airflow.versions import parse_tag

WORK = Path(__file__).resolve().parent / ".work"
#: Bump when the generated repository changes shape, so cached origins are rebuilt.
GENERATOR_VERSION = 1
#: Day 0 of Flatcar's major version numbers (main's major is the number of days since).
EPOCH = dt.date(2013, 7, 1)
HISTORY_START = dt.datetime(2013, 8, 21, 9, 0, tzinfo=dt.UTC)
#: main's head: the nightly commit of 2026-08-20, pushed after midnight as in the real repository.
HEAD_TIME = dt.datetime(2026, 8, 21, 2, 24, tzinfo=dt.UTC)
HEAD_NIGHTLY = dt.datetime(2026, 8, 20, 21, 0, tzinfo=dt.UTC)
BENCH_VERSION = "main-4799.0.0-bench"
GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.org",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.org",
}


def run_git(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, stdin: bytes = b""
) -> str:
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV, **(env or {})},
        input=stdin,
        capture_output=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed ({proc.returncode}): {proc.stderr.decode().strip()}")
    return proc.stdout.decode().strip()


def disk_usage(path: Path) -> int:
    """Bytes allocated on disk under ``path`` (like ``du``)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def commit_counts(git_dir: Path) -> tuple[int, int]:
    """(``git rev-list --all --count``, commit objects stored): a cache that keeps no refs differs."""
    reachable = int(run_git("--git-dir", str(git_dir), "rev-list", "--all", "--count"))
    kinds = run_git(
        "--git-dir", str(git_dir), "cat-file", "--batch-all-objects", "--batch-check=%(objecttype)"
    ).split()
    return reachable, kinds.count("commit")


# -- a synthetic origin shaped like flatcar/scripts ----------------------------------------------------------
OVERLAY = "sdk_container/src/third_party/coreos-overlay"
PORTAGE = "sdk_container/src/third_party/portage-stable"
# fmt: off
CATEGORIES = (
    "app-admin", "app-arch", "app-containers", "app-crypt", "app-emulation", "app-misc", "coreos-base",
    "dev-cpp", "dev-go", "dev-lang", "dev-libs", "dev-python", "dev-util", "net-dns", "net-firewall",
    "net-libs", "net-misc", "sys-apps", "sys-auth", "sys-block", "sys-boot", "sys-fs", "sys-kernel",
    "sys-libs", "sys-process", "virtual",
)
WORDS = (
    "the", "of", "a", "to", "in", "is", "for", "on", "with", "as", "be", "by", "from", "at", "build",
    "image", "sdk", "package", "ebuild", "version", "update", "kernel", "systemd", "flatcar", "coreos",
    "portage", "overlay", "amd64", "arm64", "board", "test", "release", "channel", "nightly", "stable",
    "beta", "alpha", "lts", "signing", "manifest", "container", "docker", "oem", "grub", "efi", "verity",
    "usr", "rootfs", "initrd", "ignition", "SRC_URI", "KEYWORDS", "SLOT", "IUSE", "RDEPEND", "DEPEND",
    "src_install", "src_compile", "emake", "einfo", "die", "fi", "then", "local", "if",
)
# fmt: on
AUTHORS = [
    f"{first} {last}" for first in ("Alex", "Kai", "Mika", "Sam", "Jo", "Ada") for last in "ABCDEFGHIJ"
]


def _synthetic_paths(count: int, rng: random.Random) -> list[str]:
    paths = {VERSIONFILE_PATH}
    kinds = [
        ("overlay", 40),
        ("portage", 35),
        ("ci", 5),
        ("lib", 6),
        ("changelog", 10),
        ("top", 4),
    ]
    names, weights = zip(*kinds, strict=True)
    while len(paths) < count:
        kind = rng.choices(names, weights)[0]
        word = f"{rng.choice(WORDS).lower()}-{rng.randrange(1000):03d}"
        if kind in ("overlay", "portage"):
            base = OVERLAY if kind == "overlay" else PORTAGE
            pkg = f"{base}/{rng.choice(CATEGORIES)}/{word}"
            leaf = rng.choice(
                [
                    f"{word}-{rng.randrange(1, 30)}.{rng.randrange(20)}.ebuild",
                    "metadata.xml",
                    "Manifest",
                    f"files/{rng.choice(WORDS).lower()}-{rng.randrange(100)}.patch",
                ]
            )
            paths.add(f"{pkg}/{leaf}")
        elif kind == "ci":
            paths.add(f"ci-automation/{word}.sh")
        elif kind == "lib":
            paths.add(f"{rng.choice(['build_library', 'sdk_lib', 'oem', 'jenkins'])}/{word}.sh")
        elif kind == "changelog":
            paths.add(f"changelog/{rng.choice(['changes', 'bugfixes', 'security'])}/{word}.md")
        else:
            paths.add(f"{word}.sh")
    return sorted(paths)


def _versionfile(os_version: str, build_id: str, sdk_version: str) -> bytes:
    full = f"{os_version}+{build_id}" if build_id else os_version
    sdk = f"{sdk_version}+{build_id}" if build_id else sdk_version
    return (
        f"FLATCAR_VERSION={full}\nFLATCAR_VERSION_ID={os_version}\n"
        f'FLATCAR_BUILD_ID="{build_id}"\nFLATCAR_SDK_VERSION={sdk}\n'
    ).encode()


def _major(when: dt.datetime) -> int:
    return (when.date() - EPOCH).days


class _Stream:
    """Writes a ``git fast-import`` stream; counts commits."""

    def __init__(self, out) -> None:
        self.out = out
        self.buffer: list[bytes] = []
        self.size = 0
        self.marks = 0
        self.commits = 0

    def write(self, data: bytes) -> None:
        self.buffer.append(data)
        self.size += len(data)
        if self.size > 1 << 20:
            self.flush()

    def flush(self) -> None:
        self.out.write(b"".join(self.buffer))
        self.buffer.clear()
        self.size = 0

    def commit(
        self,
        ref: str,
        when: dt.datetime,
        author: str,
        message: str,
        parent: int | None,
        changes: dict[str, bytes],
        merge: int | None = None,
    ) -> int:
        self.marks += 1
        self.commits += 1
        email = author.lower().replace(" ", ".") + "@example.org"
        stamp = f"{int(when.timestamp())} +0000"
        msg = message.encode()
        parts = [
            f"commit {ref}\nmark :{self.marks}\nauthor {author} <{email}> {stamp}\n".encode(),
            f"committer {author} <{email}> {stamp}\ndata {len(msg)}\n".encode(),
            msg,
            b"\n",
        ]
        if parent is not None:
            parts.append(f"from :{parent}\n".encode())
        if merge is not None:
            parts.append(f"merge :{merge}\n".encode())
        for path, content in changes.items():
            parts.append(f"M 100644 inline {path}\ndata {len(content)}\n".encode())
            parts.append(content)
            parts.append(b"\n")
        parts.append(b"\n")
        self.write(b"".join(parts))
        return self.marks

    def lightweight_tag(self, name: str, mark: int) -> None:
        self.write(f"reset refs/tags/{name}\nfrom :{mark}\n\n".encode())


def _generate_stream(out, commits: int, tags: int, files: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)  # noqa: S311 (reproducible test data, not cryptography)
    paths = _synthetic_paths(files, rng)
    editable = [p for p in paths if p != VERSIONFILE_PATH]
    pool = [" ".join(rng.choices(WORDS, k=rng.randrange(3, 14))) for _ in range(4000)]
    contents: dict[str, list[str]] = {
        path: [rng.choice(pool) for _ in range(3 if path.startswith("changelog/") else rng.randrange(8, 60))]
        for path in editable
    }
    stream = _Stream(out)
    span = (HEAD_TIME - HISTORY_START).total_seconds()

    def when(index: int) -> dt.datetime:
        jitter = rng.uniform(0, span / commits * 0.9)
        return HISTORY_START + dt.timedelta(seconds=span * index / commits + jitter)

    def render(path: str) -> bytes:
        return ("\n".join(contents[path]) + "\n").encode()

    def edit(counter: int) -> dict[str, bytes]:
        changed = {}
        for path in rng.sample(editable, rng.choice((1, 1, 1, 2))):
            lines = contents[path]
            if rng.random() < 0.3 or len(lines) < 4:
                lines.insert(rng.randrange(len(lines) + 1), f"{rng.choice(pool)} {counter}")
            else:
                lines[rng.randrange(len(lines))] = f"{rng.choice(pool)} {counter}"
            changed[path] = render(path)
        return changed

    # Tags: about a third main nightlies (commits on main), the rest releases (free-standing commits).
    n_release = tags - tags // 3
    tag_at = sorted(rng.sample(range(1, commits - 2), tags))
    release_at = set(rng.sample(tag_at, n_release))
    names: set[str] = set()
    first = when(0)
    sdk = f"{_major(first)}.0.0"
    initial = {path: render(path) for path in editable}
    initial[VERSIONFILE_PATH] = _versionfile(f"{_major(first)}.0.0", "", sdk)
    main = stream.commit("refs/heads/main", first, rng.choice(AUTHORS), "Initial import\n", None, initial)
    next_tag = 0
    topics = 0
    while stream.commits < commits - 1:
        index = stream.commits
        now = when(index)
        author = rng.choice(AUTHORS)
        if next_tag < len(tag_at) and index >= tag_at[next_tag]:
            next_tag += 1
            major = _major(now)
            if tag_at[next_tag - 1] in release_at:
                channel, minor, back = rng.choices(
                    [("alpha", 0, 0), ("beta", 1, 28), ("stable", 2, 56), ("lts", 3, 500)], [35, 25, 30, 10]
                )[0]
                release_major, patch = max(_major(first), major - back), 0
                while f"{channel}-{release_major}.{minor}.{patch}" in names:
                    patch += 1
                name = f"{channel}-{release_major}.{minor}.{patch}"
                vernum = f"{release_major}.{minor}.{patch}"
                change = {VERSIONFILE_PATH: _versionfile(vernum, "", f"{release_major}.0.0")}
                mark = stream.commit(
                    f"refs/tags/{name}", now, "flatcar-ci", f"New version: {name}\n", main, change
                )
            else:
                build_id = f"nightly-{now:%Y%m%d}-2100"
                name = f"main-{major}.0.0-{build_id}"
                if name in names:
                    name, build_id = f"{name}-INTERMEDIATE", f"{build_id}-INTERMEDIATE"
                change = {VERSIONFILE_PATH: _versionfile(f"{major}.0.0", build_id, f"{major}.0.0")}
                main = mark = stream.commit(
                    "refs/heads/main", now, "flatcar-ci", f"New version: {name}\n", main, change
                )
                stream.lightweight_tag(name, mark)
            names.add(name)
        elif rng.random() < 0.013 and stream.commits < commits - 6:
            # A short topic branch merged back (the branch ref stays, like the real repo's 680 branches).
            topics += 1
            branch = f"refs/heads/dev/{author.split()[0].lower()}/topic-{topics}"
            tip = main
            for _ in range(rng.randrange(1, 4)):
                tip = stream.commit(
                    branch, when(stream.commits), author, f"topic {topics}\n", tip, edit(index)
                )
            main = stream.commit(
                "refs/heads/main",
                when(stream.commits),
                author,
                f"Merge topic {topics}\n",
                main,
                {},
                merge=tip,
            )
        else:
            words = " ".join(rng.choices(WORDS, k=rng.randrange(3, 9)))
            main = stream.commit(
                "refs/heads/main", now, author, f"{words}\n\nDetails {index}.\n", main, edit(index)
            )
    head_id = f"nightly-{HEAD_NIGHTLY:%Y%m%d}-2100"
    major = _major(HEAD_NIGHTLY)
    change = {VERSIONFILE_PATH: _versionfile(f"{major}.0.0", head_id, f"{major}.0.0")}
    stream.commit(
        "refs/heads/main", HEAD_TIME, "flatcar-ci", f"New version: main-{major}.0.0-{head_id}\n", main, change
    )
    stream.flush()
    return {"commits": stream.commits, "tags": len(names), "topic_branches": topics, "files": len(paths)}


def synthetic_origin(commits: int, tags: int, files: int, seed: int, say) -> Path:
    """The generated origin for these parameters, built once and cached under ``benchmarks/.work``."""
    path = WORK / f"origin-c{commits}-t{tags}-f{files}-s{seed}-g{GENERATOR_VERSION}.git"
    if (path / "bench-ready").exists():
        return path
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="origin-build-", dir=WORK)) / "origin.git"
    start = time.perf_counter()
    run_git("init", "--quiet", "--bare", str(tmp))
    run_git("--git-dir", str(tmp), "symbolic-ref", "HEAD", "refs/heads/main")
    proc = subprocess.Popen(
        ["git", "--git-dir", str(tmp), "fast-import", "--quiet", "--done"],
        stdin=subprocess.PIPE,
        env={**os.environ, **GIT_ENV},
    )
    assert proc.stdin is not None
    stats = _generate_stream(proc.stdin, commits, tags, files, seed)
    proc.stdin.write(b"done\n")
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError("git fast-import failed")
    imported = time.perf_counter() - start
    # Pack it as a hosting server would: one pack with good deltas and a reachability bitmap.
    run_git("--git-dir", str(tmp), "repack", "-a", "-d", "-f", "-b", "-q", "--window=10", "--depth=50")
    run_git("--git-dir", str(tmp), "pack-refs", "--all")
    stats["seconds_import"] = round(imported, 1)
    stats["seconds_total"] = round(time.perf_counter() - start, 1)
    (tmp / "bench-ready").write_text(json.dumps(stats) + "\n")
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    shutil.rmtree(tmp.parent)
    say(f"generated {path.name}: {stats}")
    return path


def external_origin(source: Path, say) -> tuple[Path, list[str]]:
    """A prepared copy of an existing bare repository (never written to), cached under .work.

    Refs whose history lacks an object are deleted in the copy (a snapshot may miss one, and a clone of the
    copy would then fail); the copy is repacked with a bitmap as a hosting server's would be.
    """
    source = source.resolve()
    key = hashlib.sha256(str(source).encode()).hexdigest()[:12]
    path = WORK / f"origin-external-{key}.git"
    notes_file = path / "bench-ready"
    if notes_file.exists():
        return path, json.loads(notes_file.read_text())["notes"]
    if not (source / "HEAD").exists() or not (source / "objects").is_dir():
        raise SystemExit(f"--origin {source} is not a bare git repository")
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="origin-copy-", dir=WORK)) / "origin.git"
    say(f"copying {source} (once; cached as {path.name})")
    subprocess.run(["cp", "-a", "--", str(source), str(tmp)], check=True)
    run_git("init", "--quiet", "--bare", str(tmp))  # adds a config file if the snapshot has none
    for promisor in (tmp / "objects" / "pack").glob("*.promisor"):
        promisor.unlink()
    git_dir = ("--git-dir", str(tmp))
    try:
        run_git(*git_dir, "cat-file", "-e", f"refs/heads/main:{VERSIONFILE_PATH}")
    except RuntimeError:
        shutil.rmtree(tmp.parent)
        raise SystemExit(f"--origin {source} has no branch main with {VERSIONFILE_PATH}") from None
    notes = []
    listing = run_git(*git_dir, "rev-list", "--objects", "--branches", "--tags", "--missing=print")
    missing = [line[1:] for line in listing.splitlines() if line.startswith("?")]
    for oid in missing:
        for commit in run_git(
            *git_dir, "log", "--branches", "--tags", "--format=%H", f"--find-object={oid}"
        ).split():
            for ref in run_git(
                *git_dir,
                "for-each-ref",
                "--format=%(refname)",
                "--contains",
                commit,
                "refs/heads",
                "refs/tags",
            ).split():
                run_git(*git_dir, "update-ref", "-d", ref)
                notes.append(f"deleted {ref} in the copy: its history lacks object {oid}")
    run_git(*git_dir, "repack", "-a", "-d", "-b", "-q")
    run_git(*git_dir, "pack-refs", "--all")
    notes_file = tmp / "bench-ready"
    notes_file.write_text(json.dumps({"source": str(source), "notes": notes}) + "\n")
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    shutil.rmtree(tmp.parent)
    for note in notes:
        say(note)
    return path, notes


# -- measuring -----------------------------------------------------------------------------------------------
class TimedScriptsRepo(ScriptsRepo):
    """ScriptsRepo that adds up the time of each git subcommand it runs (the cost breakdown)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.steps: dict[str, float] = defaultdict(float)

    def _timed(self, name: str, func, *args, **kwargs):
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            self.steps[name] += time.perf_counter() - start

    def git(self, *args: str, **kwargs) -> str:
        return self._timed(args[0], super().git, *args, **kwargs)

    def read_file(self, commit: str, path: str) -> bytes:
        return self._timed("cat-file", super().read_file, commit, path)

    def push(self, refspecs, **kwargs):
        return self._timed("push", super().push, refspecs, **kwargs)


@dataclass
class Sample:
    seconds: float
    action: str = ""
    disk_bytes: int = 0
    rev_list_all: int = 0
    commit_objects: int = 0
    steps: dict[str, float] = field(default_factory=dict)


@dataclass
class Scenario:
    name: str
    description: str
    samples: list[Sample] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        times = [s.seconds for s in self.samples]
        steps = sorted({k for s in self.samples for k in s.steps})
        last = self.samples[-1]
        return {
            "name": self.name,
            "description": self.description,
            "runs": len(times),
            "median_s": round(statistics.median(times), 3),
            "min_s": round(min(times), 3),
            "max_s": round(max(times), 3),
            "actions": sorted({s.action for s in self.samples}),
            "disk_bytes_last": last.disk_bytes,
            "rev_list_all_last": last.rev_list_all,
            "commit_objects_last": last.commit_objects,
            "median_step_s": {
                k: round(statistics.median(s.steps.get(k, 0.0) for s in self.samples), 3) for k in steps
            },
            "samples": [asdict(s) for s in self.samples],
        }


def _request(label: str) -> TagRequest:
    return TagRequest(version=parse_tag(f"{BENCH_VERSION}-{label}"), ref="main", kind=BuildKind.FULL)


def _tag_once(url: str, cache: Path, label: str, expect: str) -> Sample:
    repo = TimedScriptsRepo(url, cache_dir=cache)
    start = time.perf_counter()
    result = tag_version(repo, _request(label))
    seconds = time.perf_counter() - start
    if result.action != expect:
        raise RuntimeError(f"tagging {label}: expected action {expect!r}, got {result.action!r}")
    if result.branch_pushed:
        raise RuntimeError(f"tagging {label} pushed the branch; a dev build must not")
    reachable, stored = commit_counts(repo.path)
    return Sample(
        seconds=seconds,
        action=result.action,
        disk_bytes=disk_usage(cache),
        rev_list_all=reachable,
        commit_objects=stored,
        steps={k: round(v, 4) for k, v in repo.steps.items()},
    )


def _advance_main(origin: Path, counter: int) -> None:
    """Add one commit to the origin's main (a new file line), as a day's merges would."""
    git_dir = ("--git-dir", str(origin))
    head = run_git(*git_dir, "rev-parse", "refs/heads/main")
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        run_git(*git_dir, "read-tree", head, env=env)
        blob = run_git(*git_dir, "hash-object", "-w", "--stdin", stdin=f"moved {counter}\n".encode())
        run_git(*git_dir, "update-index", "--add", "--cacheinfo", f"100644,{blob},bench-moved.txt", env=env)
        tree = run_git(*git_dir, "write-tree", env=env)
    commit = run_git(
        *git_dir, "commit-tree", tree, "-p", head, stdin=f"bench: main moved {counter}\n".encode()
    )
    run_git(*git_dir, "update-ref", "refs/heads/main", commit, head)


def _clone_once(url: str, dest: Path, extra: list[str]) -> Sample:
    start = time.perf_counter()
    subprocess.run(
        ["git", "clone", "--bare", "--quiet", *extra, url, str(dest)],
        check=True,
        env={**os.environ, **GIT_ENV},
    )
    seconds = time.perf_counter() - start
    reachable, stored = commit_counts(dest)
    sample = Sample(seconds=seconds, action="clone", disk_bytes=disk_usage(dest), rev_list_all=reachable)
    sample.commit_objects = stored
    shutil.rmtree(dest)
    return sample


def benchmark(origin: Path, repeat: int, clone_repeat: int, say) -> list[Scenario]:
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=WORK))
    try:
        work_origin = run_dir / "origin.git"
        subprocess.run(["cp", "-a", "--", str(origin), str(work_origin)], check=True)
        url = work_origin.as_uri()
        run_git(
            "--git-dir", str(work_origin), "rev-list", "--all", "--count"
        )  # page cache warm, like a server
        scenarios = []

        def scenario(name: str, description: str) -> Scenario:
            say(f"  {name} ...")
            scenarios.append(Scenario(name, description))
            return scenarios[-1]

        full = scenario(
            "clone --bare (full)", "git clone --bare of the origin: a full clone per run (avoided)"
        )
        for i in range(clone_repeat):
            full.samples.append(_clone_once(url, run_dir / f"clone-full-{i}.git", []))
        shallow = scenario("clone --bare --depth=1", "git clone --bare --depth=1 (main only, one commit)")
        for i in range(clone_repeat):
            shallow.samples.append(_clone_once(url, run_dir / f"clone-shallow-{i}.git", ["--depth=1"]))

        cold = scenario("cold", "tag_version with an empty cache directory, new tag each run")
        for i in range(repeat):
            cache = run_dir / f"cold-{i}"
            cold.samples.append(_tag_once(url, cache, f"cold-{i}", "created"))
            shutil.rmtree(cache)

        warm_cache = run_dir / "warm"
        _tag_once(url, warm_cache, "warm-prime", "created")  # first run on the host, not counted
        warm = scenario("warm", "tag_version, cache reused (primed by one untimed run), new tag each run")
        for i in range(repeat):
            warm.samples.append(_tag_once(url, warm_cache, f"warm-{i}", "created"))

        reuse = scenario("reuse", "tag_version again for an existing tag with the identical tree, warm cache")
        for _ in range(repeat):
            reuse.samples.append(_tag_once(url, warm_cache, "warm-0", "reused"))

        reuse_cold = scenario("reuse, cold cache", "the same retried on another host (empty cache)")
        for i in range(repeat):
            cache = run_dir / f"reuse-cold-{i}"
            reuse_cold.samples.append(_tag_once(url, cache, "warm-0", "reused"))
            shutil.rmtree(cache)

        # Its own cache, primed like warm's: the reuse runs above left a tag ref in warm's cache, and a
        # ref changes what a fetch can negotiate.
        moved_cache = run_dir / "moved"
        _tag_once(url, moved_cache, "moved-prime", "created")
        moved = scenario(
            "warm, main moved", "cache primed by one untimed run; main gains a commit before each run"
        )
        for i in range(repeat):
            _advance_main(work_origin, i)
            moved.samples.append(_tag_once(url, moved_cache, f"moved-{i}", "created"))
        return scenarios
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


# -- reporting -----------------------------------------------------------------------------------------------
def machine() -> dict[str, object]:
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "memory_gib": mem,
        "git": run_git("--version"),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def origin_stats(origin: Path) -> dict[str, object]:
    git_dir = ("--git-dir", str(origin))
    refs = run_git(*git_dir, "for-each-ref", "--format=%(refname)", "refs/heads", "refs/tags").split()
    return {
        "commits_all": int(run_git(*git_dir, "rev-list", "--all", "--count")),
        "commits_main": int(run_git(*git_dir, "rev-list", "--count", "refs/heads/main")),
        "branches": sum(ref.startswith("refs/heads/") for ref in refs),
        "tags": sum(ref.startswith("refs/tags/") for ref in refs),
        "files_in_main": len(
            run_git(*git_dir, "ls-tree", "-r", "--name-only", "refs/heads/main").splitlines()
        ),
        "disk_bytes": disk_usage(origin),
    }


def human_size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError


def print_table(report: dict[str, object]) -> None:
    m, o = report["machine"], report["origin"]
    print(f"machine: {m['cpus']} CPUs, {m['memory_gib']} GiB, {m['git']}, Python {m['python']}")
    print(
        f"origin: {report['origin_kind']}: {o['commits_all']} commits ({o['commits_main']} on main), "
        f"{o['branches']} branches, {o['tags']} tags, {o['files_in_main']} files, "
        f"{human_size(o['disk_bytes'])}"
    )
    for note in report["notes"]:
        print(f"note: {note}")
    header = ("scenario", "runs", "median s", "min s", "max s", "action", "disk", "rev-list --all", "commits")
    rows = [header]
    for s in report["scenarios"]:
        rows.append(
            (
                s["name"],
                str(s["runs"]),
                f"{s['median_s']:.3f}",
                f"{s['min_s']:.3f}",
                f"{s['max_s']:.3f}",
                ",".join(s["actions"]),
                human_size(s["disk_bytes_last"]),
                str(s["rev_list_all_last"]),
                str(s["commit_objects_last"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for n, row in enumerate(rows):
        print(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print("disk: cache (or clone) size after the last run; commits: commit objects stored in it.")
    print("median seconds per git step (tag_version runs):")
    for s in report["scenarios"]:
        if s["median_step_s"]:
            steps = sorted(s["median_step_s"].items(), key=lambda kv: -kv[1])
            print(f"  {s['name']}: " + ", ".join(f"{k} {v:.3f}" for k, v in steps if v >= 0.001))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--commits", type=int, default=36000, help="synthetic origin: commits (default 36000)"
    )
    parser.add_argument("--tags", type=int, default=450, help="synthetic origin: tags (default 450)")
    parser.add_argument(
        "--files", type=int, default=3000, help="synthetic origin: files in the tree (default 3000)"
    )
    parser.add_argument("--seed", type=int, default=4799, help="synthetic origin: random seed")
    parser.add_argument(
        "--origin", type=Path, help="use a copy of this bare repository instead of a synthetic one"
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs per tagging scenario (default 5)")
    parser.add_argument("--clone-repeat", type=int, default=3, help="runs per clone comparison (default 3)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.commits < 100 or not 1 <= args.tags < args.commits // 4 or args.files < 10 or args.repeat < 1:
        parser.error("need --commits >= 100, 1 <= --tags < commits/4, --files >= 10, --repeat >= 1")
    logging.basicConfig(level=logging.WARNING)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    start = time.perf_counter()
    notes: list[str] = []
    if args.origin:
        origin, notes = external_origin(args.origin, say)
        kind = f"copy of {args.origin}"
        params: dict[str, object] = {"origin": str(args.origin)}
    else:
        origin = synthetic_origin(args.commits, args.tags, args.files, args.seed, say)
        kind = "synthetic"
        params = {"commits": args.commits, "tags": args.tags, "files": args.files, "seed": args.seed}
        generated = json.loads((origin / "bench-ready").read_text())
        notes.append(
            f"generated in {generated['seconds_total']} s (fast-import {generated['seconds_import']} s)"
        )
    say(f"benchmarking against {origin.name} ...")
    scenarios = benchmark(origin, args.repeat, args.clone_repeat, say)
    report = {
        "benchmark": "tagging",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "origin_kind": kind,
        "parameters": {**params, "repeat": args.repeat, "clone_repeat": args.clone_repeat},
        "origin": origin_stats(origin),
        "notes": notes,
        "scenarios": [s.summary() for s in scenarios],
        "seconds_total": round(time.perf_counter() - start, 1),
    }
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print_table(report)
        print(f"total {report['seconds_total']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
