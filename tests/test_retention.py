"""Build cache retention end to end: the policy, the scripts' own garbage_collect, the real cache and origin.

The randomized test interleaves garbage collections (dry runs, applied ones, and one interrupted half-way
and run again) with builds that start (they tag the miniature origin and write their first artifacts in
the cache's layout), run (more artifacts) and finish (an index entry, success or failure). After every
collection: nothing in use, pinned, released, or a supported branch's last good nightly lost a file or
its tag; everything the report said goes is gone, tags included; a dry run changed nothing.

Builds are made directly (a tag, files, an index entry) rather than by running every step: a step-built
build takes ~25 s, and what the collector sees of a build is exactly these three things. The collection
itself is the real thing: the DAG's code, the local runner, flatcar-step.sh, the miniature
garbage_collect.sh, ssh and the build cache server's restricted shell, git push --delete. The same with
real builds of every step under a real scheduler: tests/test_retention_scheduler.py.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import random
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from connections import CACHE_CONN
from infra import run_step

from flatcar_airflow.buildindex.store import write_index
from flatcar_airflow.config import parse_config
from flatcar_airflow.hooks.buildcache import BuildCacheHook
from flatcar_airflow.retention.collector import REPORT_PATH, collect
from flatcar_airflow.runners import make_runner
from flatcar_airflow.versionfile import VERSIONFILE_PATH, VersionFile

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
RELEASED_SDK = "4593.0.0"


@pytest.fixture(autouse=True)
def _empty_cache(build_cache):
    build_cache.clear()
    yield
    build_cache.clear()


def _config(origin: str, tmp_path: Path, **retention):
    return parse_config(
        yaml.safe_dump(
            {
                "scripts_repo": origin,
                "buildcache_conn_id": CACHE_CONN,
                "runner": {"type": "local", "root": str(tmp_path / "build-root")},
                "tagging_cache": str(tmp_path / "tag-cache"),
                "os": {"branches": ["flatcar-4593"]},
                "retention": retention,
            }
        )
    )


@dataclass
class Build:
    tag: str
    branch: str
    version: str
    sdk: str
    day: int
    when: dt.datetime
    state: str = "running"  # running, success, failed
    files: list[str] = field(default_factory=list)

    @property
    def full(self) -> bool:
        return self.version == self.sdk


class World:
    """The origin, the cache and the index as builds leave them, and what the test expects."""

    def __init__(self, origin, cache, tmp_path: Path, rng: random.Random):
        self.origin, self.cache, self.rng = origin, cache, rng
        self.work = origin.clone(tmp_path / "work", "main")
        self.builds: dict[str, Build] = {}
        self.hook = BuildCacheHook(CACHE_CONN)
        self._made = set()

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=self.work, check=True, capture_output=True, text=True
        ).stdout.strip()

    def tag_release(self, tag: str, sdk: str, version: str) -> None:
        self._tag(tag, VersionFile.create(sdk, version))

    def _tag(self, tag: str, versionfile: VersionFile) -> None:
        (self.work / VERSIONFILE_PATH).write_text(versionfile.render())
        self.git("add", VERSIONFILE_PATH)
        self.git("-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "--allow-empty", "-m", tag)
        self.git("tag", tag)
        self.git("push", "-q", "origin", tag)

    def start(self, branch: str, day: int) -> Build:
        when = NOW - dt.timedelta(days=day)
        stamp = f"nightly-{when:%Y%m%d}-{self.rng.choice(['0300', '2100'])}"
        if branch == "main":
            vernum = f"{4700 + (100 - day)}.0.0"
            tag, version = f"main-{vernum}-{stamp}", f"{vernum}+{stamp}"
            sdk = version
        else:
            tag, version, sdk = f"stable-4593.2.5-{stamp}", f"4593.2.5+{stamp}", RELEASED_SDK
        if tag in self.builds or tag in self._made:
            return None
        self._made.add(tag)
        self._tag(tag, VersionFile.create(sdk, version))
        build = Build(
            tag,
            branch,
            version,
            sdk,
            day,
            dt.datetime.strptime(stamp[8:], "%Y%m%d-%H%M").replace(tzinfo=dt.UTC),
        )
        self.builds[tag] = build
        self.progress(build)
        return build

    def progress(self, build: Build) -> None:
        dv = build.version.replace("+", "-")
        stages = [
            [f"containers/{dv}/flatcar-packages-amd64-{dv}.tar.zst"],
            [
                f"boards/amd64-usr/{build.version}/pkgs/Packages",
                f"images/amd64/{build.version}/image.bin.bz2",
            ],
            [f"images/arm64/{build.version}/image.bin.bz2", f"testing/{build.version}/amd64/qemu/r.tap"],
        ]
        if build.full:
            stages.insert(
                0, [f"sdk/amd64/{build.version}/sdk.tar.bz2", f"containers/{dv}/flatcar-sdk-all-{dv}.tar.zst"]
            )
        done = len([s for s in stages if s[0] in build.files])
        if done < len(stages):
            for name in stages[done]:
                path = self.cache.path(name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"x" * self.rng.randrange(1, 5000))
                build.files.append(name)

    def finish(self, build: Build, state: str | None = None) -> None:
        while len(build.files) < (5 if build.full else 3) + 2:
            before = len(build.files)
            self.progress(build)
            if len(build.files) == before:
                break
        build.state = state or self.rng.choice(["success", "success", "failed"])
        self.write_index(build.branch)

    def write_index(self, branch: str) -> None:
        entries = [
            {
                "version_tag": b.tag,
                "version": b.version,
                "sdk_version": b.sdk,
                "branch": b.branch,
                "run_type": "scheduled",
                "state": b.state,
                "started_at": b.when.isoformat(),
            }
            for b in sorted(self.builds.values(), key=lambda b: b.day)
            if b.branch == branch and b.state != "running"
        ]
        write_index(self.hook, branch, entries, NOW)

    def running(self) -> list[Build]:
        return [b for b in self.builds.values() if b.state == "running"]

    def snapshot(self) -> tuple[set[str], set[str]]:
        return set(self.sizes()), set(self.origin.tags())

    def sizes(self) -> dict[str, int]:
        """The builds' files (not flatcar-airflow's own records: the index, the report)."""
        found = {str(p.relative_to(self.cache.root)): p for p in self.cache.root.rglob("*") if p.is_file()}
        return {
            name: p.stat().st_size for name, p in found.items() if not name.startswith("flatcar-airflow/")
        }

    def forget_purged(self) -> None:
        """Builds whose tag is gone (a collection purged them) are no longer the world's."""
        tags = set(self.origin.tags())
        for tag in [t for t in self.builds if t not in tags]:
            del self.builds[tag]


def _collect(config, world: World, apply: bool, tmp_path: Path, **kwargs):
    running = world.running()
    return collect(
        config,
        world.hook,
        apply=apply,
        in_use={b.tag: f"run of {b.tag}" for b in running},
        in_use_versions={v: f"run of {b.tag}" for b in running for v in (b.version, b.sdk)},
        key=f"gc-test-{time.monotonic_ns()}",
        now=NOW,
        say=lambda line: None,
        **kwargs,
    )


def _last_good_nightly(world: World, branch: str) -> str | None:
    done = [b for b in world.builds.values() if b.branch == branch and b.state == "success"]
    return max(done, key=lambda b: (b.when, b.tag)).tag if done else None


def test_randomized_builds_and_collections(build_cache, mini_origin, connections, tmp_path):
    rng = random.Random(4242)
    pinned_day = 60
    world = World(mini_origin, build_cache, tmp_path, rng)
    # An old pinned build, made first so its tag exists.
    pinned = world.start("main", pinned_day)
    world.finish(pinned)
    config = _config(str(mini_origin.path), tmp_path, keep=2, min_age_days=10, pinned=[pinned.tag])
    # History: builds of both branches over the last 90 days, some still running.
    for day in sorted(rng.sample(range(1, 90), 10), reverse=True):
        build = world.start(rng.choice(["main", "flatcar-4593"]), day)
        if build and rng.random() < 0.8:
            world.finish(build)
    for branch in ("main", "flatcar-4593"):
        world.write_index(branch)
    # The flatcar-4593 builds use the released SDK, in the cache without a tag naming it: the scripts'
    # orphan sweep would remove it, so applying is refused, naming it.
    sdk_file = f"containers/{RELEASED_SDK}/flatcar-sdk-all-{RELEASED_SDK}.tar.zst"
    build_cache.path(sdk_file).parent.mkdir(parents=True)
    build_cache.path(sdk_file).write_bytes(b"sdk")
    before = world.snapshot()
    with pytest.raises(RuntimeError, match=f"the orphan sweep would remove {RELEASED_SDK}, which is"):
        _collect(config, world, True, tmp_path)
    after = world.snapshot()
    assert after == before, (
        sorted(after[0] - before[0])[:5],
        sorted(before[0] - after[0])[:5],
        after[1] ^ before[1],
    )
    world.tag_release("alpha-4593.0.0", RELEASED_SDK, RELEASED_SDK)  # as the real origin has it
    releases = {"alpha-4593.0.0", "stable-4593.2.4"}

    purged_total = 0
    interrupted = False
    holder: dict = {}

    def factory():
        holder["runner"] = make_runner(config.runner)
        return holder["runner"]

    def on_line(line: str) -> None:
        if "+ rm -rf" in line and "stopped" not in holder:
            holder["stopped"] = True
            threading.Thread(target=holder["runner"].kill).start()

    for round_no in range(4):
        # Builds start, run and finish between collections.
        for _ in range(rng.randrange(1, 4)):
            event = rng.random()
            running = world.running()
            if event < 0.4 or not running:
                world.start(rng.choice(["main", "flatcar-4593"]), rng.randrange(0, 5))
            elif event < 0.7:
                world.progress(rng.choice(running))
            else:
                world.finish(rng.choice(running))
        protected_tags = releases | {pinned.tag} | {b.tag for b in world.running()}
        protected_tags |= {
            t for t in (_last_good_nightly(world, "main"), _last_good_nightly(world, "flatcar-4593")) if t
        }
        protected_files = {f for b in world.builds.values() if b.tag in protected_tags for f in b.files}
        protected_files.add(sdk_file)
        apply = round_no == 0 or rng.random() < 0.7
        before = world.snapshot()

        if apply and not interrupted and round_no >= 1:
            # Interrupt the collection once it has removed part of the first version: the rest stays, and
            # the next collection finishes the job.
            interrupted = True
            try:
                _collect(config, world, True, tmp_path, runner_factory=factory, on_line=on_line)
            except RuntimeError as err:
                assert "garbage_collect failed" in str(err)
            report = json.loads(build_cache.fetch(REPORT_PATH))
            if report["tags_to_delete"]:
                assert report["result"].startswith("garbage_collect failed")
            world.forget_purged()

        before, sizes = world.snapshot(), world.sizes()
        report = _collect(config, world, apply, tmp_path)
        files, tags = world.snapshot()
        assert protected_files <= files, f"round {round_no}: lost {sorted(protected_files - files)}"
        assert protected_tags <= tags, f"round {round_no}: lost tags {sorted(protected_tags - tags)}"
        assert not set(report["tags_to_delete"]) & protected_tags
        stored = json.loads(build_cache.fetch(REPORT_PATH))
        assert stored["tags_to_delete"] == report["tags_to_delete"] and stored["dry_run"] is (not apply)

        def under(path: str, sizes=sizes) -> int:
            return sum(size for f, size in sizes.items() if f == path or f.startswith(path + "/"))

        for entry in report["purge"]:
            assert entry["bytes"] == sum(under(p["path"]) for p in entry["paths"]) > 0
            build = world.builds.get(entry["tag"])
            assert build is None or (build.state != "running" and build.day > 10), entry["tag"]
        for orphan in report["orphans"]:
            assert orphan["bytes"] == under(orphan["path"])
        if apply:
            assert not set(report["tags_to_delete"]) & tags, "a purged tag is still on the origin"
            gone = {p["path"] for e in report["purge"] for p in e["paths"]} | {
                o["path"] for o in report["orphans"]
            }
            assert not {f for f in files if any(f == g or f.startswith(g + "/") for g in gone)}
            for tag in report["tags_to_delete"]:
                build = world.builds.pop(tag, None)
                assert build is None or not set(build.files) & files, f"{tag} left files"
            purged_total += len(report["tags_to_delete"])
            world.forget_purged()
            assert report["result"] in ("applied", "nothing to purge")
        else:
            assert (files, tags) == before, "a dry run changed the cache or the origin"
            assert report["result"] in ("dry run", "nothing to purge")
        # What is left of the policy's view: no development build beyond keep and age stays unprotected.
        for tag, why in report["kept"].items():
            assert why, tag
    assert purged_total >= 4, "the random history purged too little to prove anything"
    assert interrupted


def _serialize(dag) -> None:
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)


def _running_build_run(dag_id: str, run_id: str, tag: str):
    """A queued-or-running run of a build DAG whose version task chose ``tag`` (as the scheduler has it)."""
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.models.xcom import XComModel
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    serialized = SerializedDagModel.get_dag(dag_id)
    run = serialized.create_dagrun(
        run_id=run_id,
        run_after=NOW,
        logical_date=None,
        run_type=DagRunType.MANUAL,
        triggered_by=DagRunTriggeredByType.TEST,
        state=DagRunState.RUNNING,
    )
    # As the Task SDK stores a task's result (serialized by the worker, not by the model).
    XComModel.set(
        "return_value", {"version": tag}, dag_id=dag_id, task_id="version", run_id=run_id, serialize=False
    )
    return run


def test_the_gc_dag_and_command_report_then_apply_and_spare_a_running_build(
    run_dag, build_cache, mini_origin, connections, tmp_path
):
    """The DAG (dry run by default, then applied) and ``flatcar-airflow gc`` (a dry run) see a running
    build run of the database as in use."""
    import os
    import shutil
    import sys

    from flatcar_airflow.pipelines import FULL_DAG_ID, build_dags
    from flatcar_airflow.retention.dag import GC_DAG_ID, build_gc_dags

    rng = random.Random(7)
    world = World(mini_origin, build_cache, tmp_path, rng)
    running, done, young = world.start("main", 40), world.start("main", 30), world.start("main", 1)
    world.finish(done, "failed")  # not the branch's last good nightly
    world.finish(young)
    config = _config(str(mini_origin.path), tmp_path, keep=0, min_age_days=5)
    (tmp_path / "flatcar.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    _serialize(build_dags(config)[FULL_DAG_ID])
    run_id = f"manual__gc-{time.monotonic_ns()}"
    _running_build_run(FULL_DAG_ID, run_id, running.tag)
    gc = build_gc_dags(config)[GC_DAG_ID]
    assert gc.params["apply"] is False and gc.task_dict["garbage_collect"].pool == "flatcar_tagging"

    before = world.snapshot()
    dry = run_dag(gc)
    assert dry.get_task_instance("garbage_collect").state == "success"
    assert world.snapshot() == before
    report = json.loads(build_cache.fetch(REPORT_PATH))
    assert report["dry_run"] is True and report["result"] == "dry run"
    assert done.tag in report["tags_to_delete"] and running.tag not in report["tags_to_delete"]
    assert report["kept"][running.tag] == f"in use by {FULL_DAG_ID} run {run_id}"
    assert report["kept"][young.tag] in ("younger than 5 days", "the last successful nightly of main")

    # The same from a shell: a dry run, the runs in use from the metadata database.
    exe = shutil.which("flatcar-airflow", path=str(Path(sys.executable).parent))
    env = {**os.environ, "FLATCAR_AIRFLOW_CONFIG": str(tmp_path / "flatcar.yaml")}
    bad = subprocess.run([exe, "gc", "--keep", "-1"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and json.loads(bad.stdout)["message"] == "--keep must not be negative"
    proc = subprocess.run([exe, "gc"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    command = json.loads(proc.stdout)
    assert command["ok"] is True and command["dry_run"] is True and command["result"] == "dry run"
    assert command["tags_to_delete"] == report["tags_to_delete"] and command["kept"] == report["kept"]
    assert f"purge {done.tag}" in proc.stderr  # the report's lines, on standard error
    assert world.snapshot() == before

    applied = run_dag(gc, run_conf={"apply": True})
    ti = applied.get_task_instance("garbage_collect")
    assert ti.state == "success"
    result = ti.xcom_pull(task_ids="garbage_collect")
    assert result["result"] == "applied" and result["dry_run"] is False
    files, tags = world.snapshot()
    assert done.tag not in tags and not set(done.files) & files
    assert {running.tag, young.tag} <= tags and set(running.files + young.files) <= files
    assert result["bytes_freed"] == sum(e["bytes"] for e in result["purge"]) + sum(
        o["bytes"] for o in result["orphans"]
    )
    # The write key never reaches the report.
    key_line = build_cache.key_file.read_text().splitlines()[1]
    assert key_line not in json.dumps(result) and key_line not in build_cache.fetch(REPORT_PATH).decode()


def test_the_mini_garbage_collect_keeps_the_real_interface(build_cache, mini_origin, tmp_path):
    """Its own KEEP/MIN_AGE_DAYS selection by tag dates, PURGE_VERSIONS without releases,
    the orphan sweep, and a second run after a first one removed the tag already."""
    work = mini_origin.clone(tmp_path / "work", "main")
    now = dt.datetime.now(dt.UTC)

    def tag(name: str, days: int, version: str) -> None:
        (work / VERSIONFILE_PATH).write_text(VersionFile.create(version, version).render())
        env = {"GIT_COMMITTER_DATE": (now - dt.timedelta(days=days)).isoformat(), "PATH": "/usr/bin:/bin"}
        for args in (
            ["add", VERSIONFILE_PATH],
            ["-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", name],
        ):
            subprocess.run(["git", *args], cwd=work, check=True, env=env)
        subprocess.run(["git", "tag", name], cwd=work, check=True, env=env)
        subprocess.run(["git", "push", "-q", "origin", name], cwd=work, check=True)
        for path in (
            f"images/amd64/{version}/a.bin",
            f"containers/{version.replace('+', '-')}/flatcar-packages-amd64-x.tar.zst",
        ):
            build_cache.path(path).parent.mkdir(parents=True, exist_ok=True)
            build_cache.path(path).write_text("x")

    builds = {
        days: (f"main-4{days:03d}.0.0-my-build", f"4{days:03d}.0.0+my-build") for days in (40, 30, 20, 3)
    }
    for days, (name, version) in builds.items():
        tag(name, days, version)
    mini_origin.git("tag", "-d", "main-4798.0.0-nightly-20260820-2100")  # the template's own nightly
    build_cache.path("testing/1.2.3+orphan/x.tap").parent.mkdir(parents=True)
    build_cache.path("testing/1.2.3+orphan/x.tap").write_text("x")
    build_cache.path("images/amd64/4593.2.4/a.bin").parent.mkdir(parents=True)
    build_cache.path("images/amd64/4593.2.4/a.bin").write_text("release")
    gc = functools.partial(
        run_step,
        str(mini_origin.path),
        "main",
        "garbage_collect.sh",
        "garbage_collect",
        cache=build_cache,
        cwd_root=tmp_path / "steps",
    )

    # Beyond the newest 1 (the 3-day-old one) and not newer than 10 days: the 40-, 30- and 20-day-old ones.
    # (DRY_RUN=y is the randomized test's and the DAG test's.)
    run = gc("1", "10")
    assert run.returncode == 0, run.output
    assert "Number of versions to keep: '1'" in run.output
    gone = [builds[d] for d in (40, 30, 20)]
    assert not {name for name, _ in gone} & set(mini_origin.tags())
    assert builds[3][0] in mini_origin.tags() and build_cache.path(f"images/amd64/{builds[3][1]}").exists()
    for _, version in gone:
        assert not build_cache.path(f"images/amd64/{version}").exists()
        assert not build_cache.path(f"containers/{version.replace('+', '-')}").exists()  # rmdir'ed
    assert not build_cache.path("testing/1.2.3+orphan").exists()
    assert build_cache.path("images/amd64/4593.2.4/a.bin").read_text() == "release"  # stable-4593.2.4

    purge = gc(env={"PURGE_VERSIONS": f"stable-4593.2.4 {builds[3][0]} {builds[40][0]}"})
    assert purge.returncode == 0, purge.output
    assert "Ignoring 'stable-4593.2.4': not a development version" in purge.output
    assert f"## No tag '{builds[40][0]}' (removed already?)" in purge.output
    assert "stable-4593.2.4" in mini_origin.tags() and builds[3][0] not in mini_origin.tags()
    assert not build_cache.path(f"images/amd64/{builds[3][1]}").exists()
    assert build_cache.path("images/amd64/4593.2.4/a.bin").exists()
