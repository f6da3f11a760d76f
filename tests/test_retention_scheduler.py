"""Retention under a real Airflow: garbage collections interleaved at random with real builds.

``airflow standalone`` (scheduler, dag-processor, API server, LocalExecutor, SQLite) runs the OS-only
pipeline of flatcar-4593 and the ``flatcar_buildcache_gc`` DAG from the project's ``dags/``, against the
miniature scripts origin and the real build cache (sshd + rsync, HTTPS). The builds are real runs of
every step: the scheduled nightly, then manual runs (REST API) that start, wait for the branch lock,
tag, write their artifacts and finish while collections, dry runs and applied ones, are triggered at
random moments (seeded, printed in every failure) with ``keep: 1`` and ``min_age_days: 0``, so the
policy purges every finished build that nothing protects.

After each collection the test checks the report against what it knows from the REST API and the
origin: no build whose run was in progress lost its tag or a file (it is kept as in use, by its run,
and it then finishes: a step whose inputs had gone would fail); no release, pin or last good nightly
was touched; a dry run removed nothing it listed; an applied one removed every path and tag it listed.
At the end, every build succeeded, and a last collection leaves exactly what the policy keeps. A grep
finds the cache's write key in no task log and no report.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import secrets
import signal
import time

import pytest
import yaml
from airflow_servers import AirflowServers, airflow_env, os_only_settings

from flatcar_airflow.retention.collector import REPORT_PATH

DAG_ID = "flatcar_os_flatcar_4593"
GC_DAG_ID = "flatcar_buildcache_gc"
RELEASES = ("stable-4593.2.4", "alpha-4593.0.0")
#: The build ids' prefix: new versions for each session, so nothing left by an aborted earlier session (the
#: steps' containers are named by version, as the real scripts name them) meets these builds.
BUILDS = f"gc{secrets.token_hex(2)}"
PINNED = f"stable-4593.2.4-{BUILDS}-1"
SEED = int(os.environ.get("FLATCAR_TEST_GC_SEED", "20261201"))


@pytest.fixture
def empty_cache(build_cache):
    build_cache.clear()
    yield build_cache
    build_cache.clear()


@pytest.fixture
def airflow(tmp_path, mini_origin, empty_cache, released_sdk, connections):
    # flatcar-4593 builds on the released SDK 4593.0.0, which the real origin has a release tag of: the
    # scripts' orphan sweep spares the SDK's directory by that tag.
    mini_origin.git("tag", "alpha-4593.0.0", mini_origin.tag_commit("stable-4593.2.4"))
    home = tmp_path / "airflow-home"
    home.mkdir()
    config = tmp_path / "flatcar.yaml"
    settings = os_only_settings(
        str(mini_origin.path),
        tmp_path,
        branch_lock={"poke_interval": 2},
        retention={"schedule": None, "keep": 1, "min_age_days": 0, "pinned": [PINNED]},
    )
    config.write_text(yaml.safe_dump(settings))
    server = AirflowServers(home, airflow_env(home, config), DAG_ID)
    server.migrate_and_create_pools()
    server.start("standalone", stop_signal=signal.SIGINT)
    server.wait_healthy()
    server.wait_for_dag(DAG_ID)
    server.wait_for_dag(GC_DAG_ID)
    yield server
    server.stop(grace=10)


def _trigger(airflow: AirflowServers, dag_id: str, conf: dict) -> str:
    """A manual run through the REST API; again when SQLite was locked (a 500 "Database error" under
    load: the API server rolled back, no run was made)."""
    for attempt in range(5):
        response = airflow.api.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        if response.status_code == 500 and "Database error" in response.text and attempt < 4:
            time.sleep(2)
            continue
        assert response.status_code == 200, response.text
        return response.json()["dag_run_id"]
    raise AssertionError("unreachable")


def _get(airflow: AirflowServers, path: str):
    """A REST GET's JSON, asked again for a while if it did not answer 200 (SQLite locked under load)."""
    for _ in range(15):
        value = airflow.get(path)
        if value is not None:
            return value
        time.sleep(2)
    raise AssertionError(f"GET {path} did not answer 200 for 30 s")


def _xcom(airflow: AirflowServers, dag_id: str, run_id: str, task_id: str):
    path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
    value = _get(airflow, path)["value"]
    return json.loads(value) if isinstance(value, str) else value


def _time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


class Builds:
    """The build runs as the REST API shows them: when each tagged, when it ended, what it tagged."""

    def __init__(self, airflow: AirflowServers):
        self.airflow = airflow
        self.tags: dict[str, str] = {}  # run id -> version tag

    def trigger(self, build_id: str) -> str:
        return _trigger(self.airflow, DAG_ID, {"build_id": build_id})

    def snapshot(self) -> dict[str, dict]:
        """run id -> {state, tagged (end of its tag task), ended (of its summary task, which ends a build
        for the collector; the run itself ends a moment later), tag}."""
        out = {}
        for run in _get(self.airflow, f"/dags/{DAG_ID}/dagRuns?limit=100")["dag_runs"]:
            path = f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances?limit=100"
            tis = {ti["task_id"]: ti for ti in _get(self.airflow, path)["task_instances"]}
            tag_ti, summary = tis.get("tag", {}), tis.get("summary", {})
            tagged = _time(tag_ti.get("end_date")) if tag_ti.get("state") == "success" else None
            if tagged and run["dag_run_id"] not in self.tags:
                self.tags[run["dag_run_id"]] = _xcom(self.airflow, DAG_ID, run["dag_run_id"], "tag")["tag"]
            out[run["dag_run_id"]] = {
                "state": run["state"],
                "tagged": tagged,
                "started": _time(run.get("start_date")),
                "ended": _time(summary.get("end_date"))
                if summary.get("end_date")
                else _time(run.get("end_date")),
                "tag": self.tags.get(run["dag_run_id"]),
                "run_type": run["run_type"],
            }
        return out


def _collect(airflow: AirflowServers, apply: bool) -> tuple[dict, dt.datetime, dt.datetime]:
    """Trigger one collection, wait for it; its report and its task's start and end."""
    run_id = _trigger(airflow, GC_DAG_ID, {"apply": apply})

    def done():
        run = airflow.get(f"/dags/{GC_DAG_ID}/dagRuns/{run_id}")
        return run and run["state"] in ("success", "failed")

    airflow.wait(done, 300, f"collection {run_id}")
    ti = _get(airflow, f"/dags/{GC_DAG_ID}/dagRuns/{run_id}/taskInstances/garbage_collect")
    assert ti["state"] == "success", ti
    report = _xcom(airflow, GC_DAG_ID, run_id, "garbage_collect")
    return report, _time(ti["start_date"]), _time(ti["end_date"])


def _paths(report: dict) -> set[str]:
    return {p["path"] for entry in report["purge"] for p in entry["paths"]} | {
        o["path"] for o in report["orphans"]
    }


def _on_origin(mini_origin) -> set[str]:
    return set(mini_origin.tags())


def test_collections_interleaved_with_real_builds_spare_what_is_in_use_and_remove_what_goes(
    airflow, mini_origin, build_cache
):
    rng = random.Random(SEED)
    where = f"(seed {SEED}; FLATCAR_TEST_GC_SEED to replay)"
    builds = Builds(airflow)

    # The nightly: unpausing schedules the latest tick (catchup is off). The collection DAG runs only
    # when triggered (no schedule here).
    for dag_id in (DAG_ID, GC_DAG_ID):
        assert airflow.api.patch(f"/dags/{dag_id}", json={"is_paused": False}).status_code == 200
    (nightly_run,) = airflow.wait_for_runs(1)
    assert nightly_run["state"] == "success", nightly_run
    nightly = builds.snapshot()[nightly_run["dag_run_id"]]["tag"]
    assert "-nightly-" in nightly

    # Manual builds, triggered at random moments among three collections (dry runs or applied). The
    # builds queue for the branch lock and build one after the other; the collections take every slot
    # of the tagging pool, so a build tags before or after one, never during.
    build_ids = [f"{BUILDS}-{n}" for n in range(1, 5)]
    plan: list[tuple[str, object]] = [("build", b) for b in build_ids]
    plan += [("collect", rng.random() < 0.6) for _ in range(3)]
    rng.shuffle(plan)
    # The case to prove: an applied collection while an unpinned build is in progress (tagged, not
    # finished) and two unpinned manual builds have finished (so it purges one: keep is 1). It comes
    # right after the last build was triggered and waits for that moment; should the builds have gone
    # past it, one more build makes it.
    last_build = max(n for n, (action, _) in enumerate(plan) if action == "build")
    plan.insert(last_build + 1, ("collect-during-build", True))

    def moment_to_prove() -> bool | None:
        now = builds.snapshot().values()
        done = [
            b for b in now if b["run_type"] == "manual" and b["state"] == "success" and b["tag"] != PINNED
        ]
        if len(done) >= 2 and any(b["tagged"] and b["ended"] is None and b["tag"] != PINNED for b in now):
            return True
        return None if all(b["state"] in ("success", "failed") for b in now) else False

    def wait_for_the_moment() -> None:
        outcome: list[bool | None] = []
        airflow.wait(lambda: outcome.append(moment_to_prove()) or outcome[-1] is not False, 600, "the moment")
        if outcome[-1] is None:
            build_ids.append(f"{BUILDS}-{len(build_ids) + 1}")
            builds.trigger(build_ids[-1])
            airflow.wait(moment_to_prove, 300, f"a build in progress after two finished {where}")

    collections = []
    for action, arg in plan:
        time.sleep(rng.uniform(0, 6))
        if action == "build":
            builds.trigger(arg)
            continue
        if action == "collect-during-build":
            wait_for_the_moment()
        report, start, end = _collect(airflow, arg)
        after = builds.snapshot()
        tags_now = _on_origin(mini_origin)
        collections.append((action, arg, report))
        say = f"{action} apply={arg} {where}: {json.dumps(report)[:3000]}"
        assert report["dry_run"] is (not arg), say

        purged = set(report["tags_to_delete"])
        # Never a release, the pin, or the branch's last good nightly.
        assert not purged & {*RELEASES, PINNED, nightly}, say
        # Nothing in use: a build that had tagged before the collection started and had not ended when
        # it finished is kept because its run uses it (unless pinned), and is not purged.
        for run_id, build in after.items():
            if (
                build["tagged"]
                and build["tagged"] < start
                and (build["ended"] is None or build["ended"] > end)
            ):
                assert build["tag"] not in purged, say
                if build["tag"] != PINNED:
                    assert report["kept"].get(build["tag"]) == f"in use by {DAG_ID} run {run_id}", say
        # Only what had finished goes (a build that ends while a collection starts may go: it is done).
        finished = {b["tag"] for b in after.values() if b["ended"] and b["ended"] < end}
        assert purged <= finished, say
        cache_files = {str(p.relative_to(build_cache.root)) for p in build_cache.root.rglob("*")}
        if arg:
            assert report["result"] in ("applied", "nothing to purge"), say
            assert not purged & tags_now, say
            assert not _paths(report) & cache_files, say
        else:
            assert report["result"] in ("dry run", "nothing to purge"), say
            assert purged <= tags_now, say
            assert _paths(report) <= cache_files, say
        for entry in report["purge"]:
            assert entry["paths"] and entry["bytes"] > 0, say

    # Every build finished successfully: none lost an input or an output while it ran.
    runs = airflow.wait_for_runs(1 + len(build_ids), timeout=900)
    assert all(run["state"] == "success" for run in runs), (runs, where)
    final = builds.snapshot()
    assert {b["tag"] for b in final.values()} == {nightly, *(f"stable-4593.2.4-{b}" for b in build_ids)}
    ((_, _, during),) = [c for c in collections if c[0] == "collect-during-build"]
    assert during["tags_to_delete"], f"the collection during a build purged nothing {where}: {during}"
    assert any(why.startswith(f"in use by {DAG_ID} run") for why in during["kept"].values()), (where, during)

    # A last applied collection, nothing running: exactly the policy's survivors are left.
    report, _, _ = _collect(airflow, True)
    newest = max((b for b in final.values() if b["run_type"] == "manual"), key=lambda b: b["started"])
    expected = {nightly, PINNED, newest["tag"]}
    tags_now = _on_origin(mini_origin)
    built = {b["tag"] for b in final.values()}
    assert built & tags_now == expected, (report, where)
    assert set(RELEASES) <= tags_now
    assert all(report["kept"].get(tag) == "official release" for tag in RELEASES), (report, where)
    images = {p.name for p in build_cache.path("images/amd64").iterdir()}
    assert images == {tag.split("-", 1)[1].replace("-", "+", 1) for tag in expected}, (images, where)
    for tag in built - expected:
        dashed = tag.split("-", 1)[1]  # 4593.2.4-gc12ab-2: containers/; 4593.2.4+gc12ab-2: images/
        left = [
            p for name in (dashed, dashed.replace("-", "+", 1)) for p in build_cache.root.rglob(f"*{name}")
        ]
        assert not left, (tag, left, where)
    assert build_cache.path("containers/4593.0.0").is_dir()  # the released SDK

    # The cache's write key is in no task log and no report.
    key_lines = [line for line in build_cache.key_file.read_text().splitlines() if len(line) > 20]
    logs = [p for p in (airflow.home / "logs").rglob("*") if p.is_file()] + list(airflow.home.glob("*.log"))
    assert any("garbage_collect" in str(p) for p in logs), logs
    texts = [p.read_text(errors="replace") for p in logs] + [build_cache.fetch(REPORT_PATH).decode()]
    texts += [json.dumps(c[2]) for c in collections]
    assert not [line[:12] for line in key_lines if any(line in text for text in texts)]
