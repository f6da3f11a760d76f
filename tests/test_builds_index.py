"""The per-branch builds index (flatcar_airflow.buildindex): entries, merge and parsing as pure functions;
updates and listings against the real loopback build cache; and whole pipeline runs under ``dag.test()``
(miniature scripts, real dockerd and cache) whose summaries keep the index, which
``flatcar-airflow index rebuild`` then recovers after it was deleted or corrupted."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from connections import CACHE_CONN, cache_connection

from flatcar_airflow.buildindex.entries import (
    INDEX_KIND,
    MAX_ENTRIES,
    SCHEMA_VERSION,
    CorruptIndex,
    NewerIndex,
    branch_from_file_name,
    entries_from_manifests,
    entry_from_manifest,
    index_file_name,
    index_path,
    merge,
    parse_index,
    render_index,
)
from flatcar_airflow.buildindex.store import parse_listing, read_index, update_index

BRANCH = "flatcar-4593"
DAG_ID = "flatcar_os_flatcar_4593"
NIGHT = dt.datetime(2026, 8, 21, 21, 0, tzinfo=dt.UTC)
MANIFEST = "flatcar-airflow-manifest.json"
EXE = shutil.which("flatcar-airflow", path=str(Path(sys.executable).parent)) or "flatcar-airflow"


def manifest(tag: str = "stable-4593.2.4-nightly-20260821-2100", **fields) -> dict:
    """A manifest as the summary task writes it (two arches, one test vendor each)."""
    ver = tag.split("-", 1)[1].replace("-", "+", 1)
    step = {"state": "success", "duration_s": 1.5, "started_at": None, "finished_at": None, "artifacts": []}
    return {
        "version": tag,
        "versionfile": {"FLATCAR_VERSION": ver, "FLATCAR_SDK_VERSION": "4593.0.0"},
        "commit": "c" * 40,
        "base_commit": "b" * 40,
        "ref": BRANCH,
        "branch": BRANCH,
        "kind": "os",
        "dag_id": DAG_ID,
        "run_id": f"scheduled__{tag}",
        "run_type": "scheduled",
        "run_time": "2026-08-21T21:00:00+00:00",
        "started_at": "2026-08-21T21:00:05+00:00",
        "finished_at": "2026-08-21T21:40:00+00:00",
        "tag": {"action": "created", "state": "success", "message": "tagged"},
        "steps": {"packages_tag": dict(step)},
        "arches": {
            arch: {
                name: dict(step) for name in ("packages", "push_packages", "image", "vms", "test_qemu_uefi")
            }
            for arch in ("amd64", "arm64")
        },
        "tests": {
            "amd64": {"qemu_uefi": {"passed": 5, "failed": 0, "skipped": 1, "failures": []}},
            "arm64": {"qemu_uefi": {"passed": 4, "failed": 1, "skipped": 1, "failures": ["cl.basic"]}},
        },
        "state": "success",
        **fields,
    }


def paths(tag_or_manifest, arches=("amd64", "arm64")) -> list[str]:
    data = tag_or_manifest if isinstance(tag_or_manifest, dict) else manifest(tag_or_manifest)
    return [f"images/{arch}/{data['versionfile']['FLATCAR_VERSION']}/{MANIFEST}" for arch in arches]


def nightly(day: int, **fields) -> dict:
    """The entry of the nightly of August ``day``."""
    tag = f"stable-4593.2.4-nightly-202608{day:02d}-2100"
    data = manifest(tag, run_time=f"2026-08-{day:02d}T21:00:00+00:00", **fields)
    return entry_from_manifest(data, paths(data))


# -- pure functions --------------------------------------------------------------------------------------


def test_index_paths_map_branch_names_to_one_file_name_and_back():
    assert index_path("main") == "flatcar-airflow/builds/main.json"
    assert index_path("lts/3033") == "flatcar-airflow/builds/lts,3033.json"
    for branch in ("main", "flatcar-4593", "lts/3033", "feature/a/b.c_d"):
        assert branch_from_file_name(index_file_name(branch)) == branch
    for bad in ("", "../x", "a..b", "a//b", "a/", "a,b", "-x", "a b", "a/.hidden"):
        with pytest.raises(ValueError, match="branch"):
            index_file_name(bad)


def test_an_entry_carries_what_a_builds_page_lists():
    data = manifest()
    entry = entry_from_manifest(data, [*paths(data), paths(data)[0]])
    assert entry == {
        "version_tag": "stable-4593.2.4-nightly-20260821-2100",
        "version": "4593.2.4+nightly-20260821-2100",
        "sdk_version": "4593.0.0",
        "channel": "stable",
        "kind": "os",
        "branch": BRANCH,
        "ref": BRANCH,
        "commit": "c" * 40,
        "dag_id": DAG_ID,
        "run_id": "scheduled__stable-4593.2.4-nightly-20260821-2100",
        "run_type": "scheduled",
        "run_time": "2026-08-21T21:00:00+00:00",
        "started_at": "2026-08-21T21:00:05+00:00",
        "finished_at": "2026-08-21T21:40:00+00:00",
        "state": "success",
        "steps": {"tag": "success", "packages_tag": "success"},
        "arches": {
            arch: {
                "image": "success",
                "packages": "success",
                "push_packages": "success",
                "test_qemu_uefi": "success",
                "vms": "success",
            }
            for arch in ("amd64", "arm64")
        },
        "tests": {
            "amd64": {"qemu_uefi": {"passed": 5, "failed": 0, "skipped": 1}},
            "arm64": {"qemu_uefi": {"passed": 4, "failed": 1, "skipped": 1}},
        },
        "failures": {},
        "durations": {
            "packages_tag": 1.5,
            **{
                f"{arch}.{name}": 1.5
                for arch in ("amd64", "arm64")
                for name in ("image", "packages", "push_packages", "test_qemu_uefi", "vms")
            },
        },
        "manifests": sorted(paths(data)),
    }
    # A failed step's recognised cause is listed by task id.
    data["arches"]["arm64"]["image"] = {
        "state": "failed",
        "failure": {"summary": "disk full on the build host"},
    }
    assert entry_from_manifest(data, [])["failures"] == {"arm64.image": "disk full on the build host"}
    assert "arm64.image" not in entry_from_manifest(data, [])["durations"]
    # A flaky count is kept when the test summary has one.
    data["tests"]["amd64"]["qemu_uefi"]["flaky"] = 2
    assert entry_from_manifest(data, [])["tests"]["amd64"]["qemu_uefi"]["flaky"] == 2
    with pytest.raises(ValueError, match="no version tag"):
        entry_from_manifest({**data, "version": None}, [])


def test_a_manifest_without_a_branch_field_belongs_to_its_ref():
    data = manifest()
    del data["branch"]
    assert entry_from_manifest(data, [])["branch"] == BRANCH


def test_merge_replaces_a_rerun_and_keeps_newest_first():
    entries = [nightly(20), nightly(21)]
    entries = merge(entries, nightly(22))
    assert [e["version_tag"][-13:-5] for e in entries] == ["20260822", "20260821", "20260820"]

    # A re-run of the 21st's build replaces its entry (same place: same run time), never duplicates it.
    rerun = nightly(21, run_id="manual__rerun", state="failed", finished_at="2026-08-23T10:00:00+00:00")
    merged = merge(entries, rerun)
    assert len(merged) == 3
    assert [e["run_id"] for e in merged if e["version_tag"].endswith("20260821-2100")] == ["manual__rerun"]
    assert merged[1]["state"] == "failed"

    # A backfill of an earlier night, built after all of them, sorts by its night.
    backfilled = merge(merged, nightly(19, run_type="backfill", finished_at="2026-08-24T00:00:00+00:00"))
    assert backfilled[-1]["version_tag"].endswith("20260819-2100")

    # Entries of one run time: the one that finished later first; the tag breaks a full tie.
    tie = merge([nightly(21, finished_at="2026-08-21T22:00:00+00:00")], nightly(21))
    assert len(tie) == 1
    a = {**nightly(21), "version_tag": "stable-4593.2.4-a"}
    b = {**nightly(21), "version_tag": "stable-4593.2.4-b"}
    assert [e["version_tag"] for e in merge([a], b)] == ["stable-4593.2.4-b", "stable-4593.2.4-a"]


def test_merge_is_bounded_and_drops_the_oldest():
    entries = []
    start = dt.datetime(2020, 1, 1, 21, tzinfo=dt.UTC)
    for n in range(MAX_ENTRIES + 5):
        when = start + dt.timedelta(days=n)
        entries.append({"version_tag": f"main-{n}.0.0", "run_time": when.isoformat()})
    merged = merge(entries, {"version_tag": "main-new", "run_time": "2030-01-01T00:00:00+00:00"})
    assert len(merged) == MAX_ENTRIES
    assert merged[0]["version_tag"] == "main-new"
    assert merged[-1]["version_tag"] == "main-6.0.0"  # the six oldest are gone
    assert len(merge(entries[:10], {"version_tag": "x", "run_time": None}, limit=4)) == 4
    # An entry without a usable time is the oldest.
    assert merge(entries[:2], {"version_tag": "x", "run_time": "soon"})[-1]["version_tag"] == "x"


def test_render_and_parse_round_trip():
    entries = [nightly(21), nightly(22)]
    text = render_index(BRANCH, entries, dt.datetime(2026, 8, 23, tzinfo=dt.UTC))
    document = json.loads(text)
    assert document["kind"] == INDEX_KIND and document["schema_version"] == SCHEMA_VERSION
    assert document["branch"] == BRANCH and document["max_entries"] == MAX_ENTRIES
    assert document["updated_at"] == "2026-08-23T00:00:00+00:00"
    assert [e["version_tag"] for e in document["builds"]] == [
        entries[1]["version_tag"],
        entries[0]["version_tag"],
    ]
    assert parse_index(text, BRANCH) == (document["builds"], [])


_GOOD = {"kind": INDEX_KIND, "schema_version": SCHEMA_VERSION, "branch": BRANCH, "builds": []}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b"{\n", "invalid JSON: Expecting property name"),
        (b"\xff\xfe", "invalid JSON"),
        (b"[]", "a JSON list, not an object"),
        (json.dumps({**_GOOD, "kind": None}), "'kind' is None"),
        (json.dumps({**_GOOD, "schema_version": None}), "'schema_version' is None"),
        (json.dumps({**_GOOD, "schema_version": True}), "'schema_version' is True"),
        (json.dumps({**_GOOD, "branch": "main"}), "of branch 'main'"),
        (json.dumps({**_GOOD, "builds": {}}), "'builds' is a JSON dict"),
    ],
)
def test_a_corrupt_index_names_its_problem(text, problem):
    with pytest.raises(CorruptIndex, match=problem.replace("(", r"\(")):
        parse_index(text, BRANCH)


def test_a_newer_index_is_refused_and_bad_entries_are_dropped():
    document = {"kind": INDEX_KIND, "schema_version": SCHEMA_VERSION + 1, "branch": BRANCH, "builds": []}
    with pytest.raises(NewerIndex, match="newer"):
        parse_index(json.dumps(document), BRANCH)
    good = nightly(21)
    document.update(schema_version=SCHEMA_VERSION, builds=[good, "x", {"version_tag": ""}, {"state": "ok"}])
    entries, dropped = parse_index(json.dumps(document), BRANCH)
    assert entries == [good] and len(dropped) == 3 and dropped[0].startswith("builds[1] ")


def test_rebuilt_entries_group_the_copies_of_a_build():
    first = manifest()
    rerun = manifest(run_id="manual__rerun", finished_at="2026-08-22T08:00:00+00:00")
    other_branch = manifest("main-4799.0.0-nightly-20260821-2100", branch="main", ref="main")
    found = [
        (paths(first)[0], first),  # amd64: the first run's manifest, overwritten below by the re-run's
        (paths(first)[1], first),  # arm64: only the first run built it
        (paths(rerun)[0], rerun),
        (paths(other_branch)[0], other_branch),
        ("images/amd64/1.2.3/" + MANIFEST, {"branch": BRANCH}),
    ]
    entries, problems = entries_from_manifests(found[2:], BRANCH)
    assert [e["run_id"] for e in entries] == ["manual__rerun"]
    assert entries[0]["manifests"] == [paths(rerun)[0]]
    assert problems == [
        "images/amd64/1.2.3/flatcar-airflow-manifest.json: the manifest has no version tag ('version')"
    ]
    # Both copies of one run are listed; a stale copy of an earlier run of the version is not.
    entries, _ = entries_from_manifests(found[:2], BRANCH)
    assert entries == [entry_from_manifest(first, paths(first))]
    entries, _ = entries_from_manifests(found[1:3], BRANCH)
    assert entries == [entry_from_manifest(rerun, [paths(rerun)[0]])]
    assert entries_from_manifests(found, "main")[0] == [
        entry_from_manifest(other_branch, [paths(other_branch)[0]])
    ]


def test_directory_listings_are_parsed_to_names():
    html = (
        "<html><head><title>Index of /images/amd64/</title></head><body><h1>Index of /images/amd64/</h1><hr>"
        '<pre><a href="../">../</a>\n'
        '<a href="4593.2.4%2Bnightly-20260821-2100/">4593.2.4+nightly-20260821-2100/</a>'
        '  21-Aug-2026 21:40    -\n<a href="4799.0.0/">4799.0.0/</a>\n<a href="version.txt">version.txt</a>'
        '\n<a href="/etc/">abs</a><a href="https://x/">x</a><a href="?C=M">sort</a><a href="a%2Fb/">slash</a>'
        '<a href="..%2F/">up</a></pre><hr></body></html>'
    )
    assert parse_listing(html) == (["4593.2.4+nightly-20260821-2100", "4799.0.0"], ["version.txt"])


# -- against the real build cache ------------------------------------------------------------------------


@pytest.fixture
def cache(build_cache):
    build_cache.clear()
    yield build_cache
    build_cache.clear()


@pytest.fixture
def hook(cache, connections):
    from flatcar_airflow.hooks.buildcache import BuildCacheHook

    return BuildCacheHook(CACHE_CONN)


def _index(cache) -> dict:
    return json.loads(cache.fetch(index_path(BRANCH)))


def _replacement_problem(hook, cache) -> str | None:
    """Why the hook's upload cannot replace a file in this cache (None when it can): an index is
    rewritten in place at every build."""
    path = "flatcar-airflow/probe/replaced.json"
    try:
        hook.upload(path, b"first\n")
        hook.upload(path, b"second, longer\n")
    except RuntimeError as err:
        return str(err)
    finally:
        shutil.rmtree(cache.path("flatcar-airflow/probe"), ignore_errors=True)
    return None


@pytest.fixture
def replacing(hook):
    """The hook of a test that rewrites files in place (test_the_hook_replaces_a_file_of_the_same_size_at_once
    checks that it can)."""
    return hook


def test_the_hook_replaces_a_file_of_the_same_size_at_once(hook, cache):
    # What every index update after the first does (and a re-run's summary with its manifest).
    assert _replacement_problem(hook, cache) is None
    path = "flatcar-airflow/probe/same-size.json"
    hook.upload(path, b"aaa\n")
    # Same size and (almost surely) the same second as the upload's own file: rsync's quick check
    # (size and mtime) must not skip it.
    now = time.time()
    os.utime(cache.path(path), (now, now))
    hook.upload(path, b"bbb\n")
    assert cache.fetch(path) == b"bbb\n"


def test_updates_of_the_real_cache_replace_reruns(replacing, cache):
    hook = replacing
    first = manifest()
    status = update_index(hook, first, paths(first))
    assert status["updated"] and status["warning"] is None and status["entries"] == 1
    assert status["url"] == cache.url("flatcar-airflow/builds/flatcar-4593.json")
    later = manifest("stable-4593.2.4-nightly-20260822-2100", run_time="2026-08-22T21:00:00+00:00")
    update_index(hook, later, paths(later))
    rerun = manifest(run_id="manual__rerun", state="failed")
    update_index(hook, rerun, paths(rerun, ["amd64"]))
    builds = _index(cache)["builds"]
    assert [(b["version_tag"], b["run_id"]) for b in builds] == [
        ("stable-4593.2.4-nightly-20260822-2100", later["run_id"]),
        ("stable-4593.2.4-nightly-20260821-2100", "manual__rerun"),
    ]
    assert builds[1]["state"] == "failed" and builds[1]["manifests"] == paths(rerun, ["amd64"])
    assert not list(cache.path("flatcar-airflow/builds").glob(".*"))  # rsync's temporary file is gone


def test_a_corrupt_index_is_started_anew_with_a_warning(replacing, cache, caplog):
    hook = replacing
    index = cache.path(index_path(BRANCH))
    index.parent.mkdir(parents=True)
    index.write_text('{"kind": "flatcar-airflow-builds-index", "builds": [')
    data = manifest()
    status = update_index(hook, data, paths(data))
    assert status["updated"] and status["entries"] == 1
    first_line = status["warning"].splitlines()[0]
    assert first_line.startswith(
        "builds index flatcar-airflow/builds/flatcar-4593.json was corrupt (invalid JSON:"
    )
    assert "`flatcar-airflow index rebuild --branch flatcar-4593` recovers the older builds" in first_line
    assert status["warning"] in caplog.text
    assert _index(cache)["builds"] == [entry_from_manifest(data, paths(data))]

    # An index with one unreadable entry keeps the others and says what it dropped.
    document = json.loads(index.read_text())
    document["builds"].append({"no": "tag"})
    index.write_text(json.dumps(document))
    later = manifest("stable-4593.2.4-nightly-20260822-2100", run_time="2026-08-22T21:00:00+00:00")
    status = update_index(hook, later, paths(later))
    assert status["entries"] == 2 and "dropped 1 unreadable entries" in status["warning"]


def test_an_index_that_cannot_be_written_or_read_warns_and_never_raises(hook, cache):
    data = manifest()
    # The index directory is a file: the read finds nothing (404), the mkdir -p of the write fails.
    cache.path("flatcar-airflow").mkdir()
    cache.path("flatcar-airflow/builds").write_text("in the way\n")
    status = update_index(hook, data, paths(data))
    assert not status["updated"] and status["url"] is None
    assert (
        status["warning"]
        .splitlines()[0]
        .startswith(
            "builds index flatcar-airflow/builds/flatcar-4593.json not updated: cannot write "
            "flatcar-airflow/builds/flatcar-4593.json to the build cache"
        )
    )
    assert "mkdir -p failed" in status["warning"].splitlines()[0]
    assert "index rebuild --branch flatcar-4593" in status["warning"]

    # The index cannot be read (here: nginx redirects a directory): nothing is overwritten.
    cache.path("flatcar-airflow/builds").unlink()
    cache.path(index_path(BRANCH)).mkdir(parents=True)
    status = update_index(hook, data, paths(data))
    assert not status["updated"]
    assert status["warning"].splitlines()[0] == (
        f"builds index flatcar-airflow/builds/flatcar-4593.json not updated: cannot read "
        f"{cache.url(index_path(BRANCH))}: HTTP 301"
    )
    assert cache.path(index_path(BRANCH)).is_dir()

    # A newer flatcar-airflow's index is left alone.
    cache.path(index_path(BRANCH)).rmdir()
    newer = json.dumps({"kind": INDEX_KIND, "schema_version": 99, "branch": BRANCH, "builds": []})
    cache.path(index_path(BRANCH)).write_text(newer)
    status = update_index(hook, data, paths(data))
    assert not status["updated"] and "schema version 99 is newer" in status["warning"]
    assert cache.path(index_path(BRANCH)).read_text() == newer


def test_the_cache_listing_is_read_over_https(hook, cache):
    from flatcar_airflow.buildindex.store import list_manifests

    data = manifest()
    for path in paths(data):
        cache.path(path).parent.mkdir(parents=True)
        cache.path(path).write_text(json.dumps(data))
    cache.path("images/amd64/4799.0.0").mkdir()  # a build of another CI: no manifest
    cache.path("images/amd64/9.9.9/").mkdir()
    cache.path(f"images/amd64/9.9.9/{MANIFEST}").write_text("{broken")
    found, problems = list_manifests(hook)
    assert sorted(path for path, _ in found) == sorted(paths(data))
    assert all(copy == data for _, copy in found)
    assert problems == [f"images/amd64/9.9.9/{MANIFEST}: invalid JSON: Expecting property name enclosed in "
                        "double quotes: line 1 column 2 (char 1)"]  # fmt: skip
    assert read_index(hook, BRANCH).exists is False


# -- whole pipeline runs and the rebuild command ---------------------------------------------------------


def _config(origin: str, tmp_path: Path, **overrides) -> str:
    data = {
        "scripts_repo": origin,
        "buildcache_conn_id": CACHE_CONN,
        "runner": {"type": "local", "root": str(tmp_path / "build-root")},
        "tagging_cache": str(tmp_path / "tag-cache"),
        "arches": {
            "amd64": {"formats": ["qemu_uefi"], "test_vendors": ["qemu_uefi"]},
            "arm64": {"formats": ["qemu_uefi"], "test_vendors": ["qemu_uefi"]},
        },
        "full": {"enabled": False},
        "os": {"branches": [BRANCH], "arches": ["amd64", "arm64"]},
        "image_changes": None,
        "heartbeat_interval": 30,
        "retries": 0,
        "preflight": {"min_free_gb": 1, "network": "off"},
        **overrides,
    }
    return yaml.safe_dump(data)


def _dag(origin, tmp_path, **overrides):
    from flatcar_airflow.config import parse_config
    from flatcar_airflow.pipelines import build_dags

    return build_dags(parse_config(_config(str(origin.path), tmp_path, **overrides)))[DAG_ID]


def _rebuild(*args: str, env: dict | None = None) -> tuple[int, dict]:
    proc = subprocess.run(
        [EXE, "index", "rebuild", *args], capture_output=True, text=True, env=env or os.environ, timeout=300
    )
    try:
        return proc.returncode, json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(
            f"not one JSON object ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        ) from None


def _summary(run) -> dict:
    return run.get_task_instance("summary").xcom_pull(task_ids="summary")


def test_summaries_keep_the_index_and_the_rebuild_command_recovers_it(
    run_dag, mini_origin, cache, released_sdk, replacing, tmp_path
):
    # 1. Last night's nightly, both arches: success.
    first = run_dag(_dag(mini_origin, tmp_path), logical_date=NIGHT)
    assert first.get_task_instance("summary").state == "success"
    tag1 = "stable-4593.2.4-nightly-20260821-2100"
    index = _index(cache)
    assert index["schema_version"] == SCHEMA_VERSION and index["branch"] == BRANCH
    (entry,) = index["builds"]
    assert entry["version_tag"] == tag1 and entry["version"] == "4593.2.4+nightly-20260821-2100"
    assert entry["state"] == "success" and entry["run_id"] == first.run_id and entry["dag_id"] == DAG_ID
    assert entry["commit"] == mini_origin.tag_commit(tag1) and entry["channel"] == "stable"
    assert entry["branch"] == entry["ref"] == BRANCH and entry["run_type"] == "manual"  # dag.test's runs
    assert entry["run_time"] == NIGHT.isoformat() and entry["started_at"] < entry["finished_at"]
    assert entry["steps"] == {"tag": "success", "preflight": "success", "packages_tag": "success"}
    assert {state for arch in ("amd64", "arm64") for state in entry["arches"][arch].values()} == {"success"}
    ver1 = entry["version"]
    assert entry["manifests"] == [f"images/amd64/{ver1}/{MANIFEST}", f"images/arm64/{ver1}/{MANIFEST}"]
    manifest1 = json.loads(cache.fetch(entry["manifests"][1]))
    for arch in ("amd64", "arm64"):
        counts = manifest1["tests"][arch]["qemu_uefi"]
        assert counts["passed"] > 0 and counts["failed"] == 0
        assert entry["tests"][arch]["qemu_uefi"] == {
            k: counts[k] for k in ("passed", "failed", "skipped", "flaky")
        }
    summary = _summary(first)
    assert summary["builds_index"]["updated"] and summary["builds_index"]["warning"] is None

    # 2. The next night, after a change, amd64 only, with a broken test: the build fails, and is indexed.
    mini_origin.push_change(BRANCH, "README", "a change\n")
    broken = _dag(mini_origin, tmp_path, step_env={"MINI_BROKEN_TESTS": "cl.basic", "MAX_RETRIES": "1"})
    second = run_dag(broken, logical_date=NIGHT + dt.timedelta(days=1), run_conf={"arches": ["amd64"]})
    assert second.state == "failed" and second.get_task_instance("amd64.test_qemu_uefi").state == "failed"
    tag2 = "stable-4593.2.4-nightly-20260822-2100"
    builds = _index(cache)["builds"]
    assert [b["version_tag"] for b in builds] == [tag2, tag1]
    failed = builds[0]
    assert failed["state"] == "failed" and failed["run_id"] == second.run_id
    assert (
        failed["arches"]["amd64"]["test_qemu_uefi"] == "failed"
        and failed["arches"]["amd64"]["vms"] == "success"
    )
    assert set(failed["arches"]["arm64"].values()) == {"skipped"}
    assert failed["tests"]["amd64"]["qemu_uefi"]["failed"] == 1
    assert (
        failed["tests"]["amd64"]["qemu_uefi"]["passed"]
        == _summary(second)["tests"]["amd64"]["qemu_uefi"]["passed"]
    )
    assert failed["manifests"] == [f"images/amd64/{failed['version']}/{MANIFEST}"]
    assert builds[1] == entry

    # 3. The failed build run again by hand (its version, its tag), now passing: the entry is replaced.
    third = run_dag(
        _dag(mini_origin, tmp_path), logical_date=None, run_conf={"version": tag2, "arches": ["amd64"]}
    )
    assert third.get_task_instance("summary").state == "success"
    builds = _index(cache)["builds"]
    assert [(b["version_tag"], b["run_id"], b["state"]) for b in builds] == [
        (tag2, third.run_id, "success"),
        (tag1, first.run_id, "success"),
    ]
    assert builds[0]["tests"]["amd64"]["qemu_uefi"]["failed"] == 0
    kept = builds

    # 4. The index is lost: the command rebuilds the same entries from the manifests.
    cache.path(index_path(BRANCH)).unlink()
    status, out = _rebuild("--branch", BRANCH, "--conn-id", CACHE_CONN)
    assert status == 0 and out["ok"], out
    assert out["indexes"] == [
        {
            "branch": BRANCH,
            "path": index_path(BRANCH),
            "url": cache.url(index_path(BRANCH)),
            "entries": 2,
            "newest": tag2,
        }
    ]
    assert out["manifests_read"] == 3 and out["problems"] == []
    assert _index(cache)["builds"] == kept

    # 5. The index is corrupted: the same again.
    cache.path(index_path(BRANCH)).write_bytes(b"\x00garbage")
    assert _rebuild("--branch", BRANCH, "--conn-id", CACHE_CONN)[0] == 0
    assert _index(cache)["builds"] == kept

    # 6. --all, with the connection in Airflow's database only (as the quickstart creates it), and another
    # branch's build in the cache.
    from flatcar_airflow.buildcache_server.cli import create_connection

    other = {**manifest1, "version": "lts-3033.3.9", "branch": "lts/3033", "ref": "lts/3033", "run_id": "x"}
    other_path = cache.path(f"images/amd64/3033.3.9/{MANIFEST}")
    other_path.parent.mkdir()
    other_path.write_text(json.dumps(other))
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env["AIRFLOW__CORE__FERNET_KEY"] = Fernet.generate_key().decode()  # as airflow.cfg keeps one
    create_connection("flatcar_buildcache_in_db", cache_connection(cache), env=env)
    cache.path(index_path(BRANCH)).unlink()
    status, out = _rebuild("--all", "--conn-id", "flatcar_buildcache_in_db", env=env)
    assert status == 0, out
    assert [(i["branch"], i["path"], i["entries"]) for i in out["indexes"]] == [
        (BRANCH, index_path(BRANCH), 2),
        ("lts/3033", "flatcar-airflow/builds/lts,3033.json", 1),
    ]
    assert _index(cache)["builds"] == kept
    lts = json.loads(cache.fetch("flatcar-airflow/builds/lts,3033.json"))
    assert lts["branch"] == "lts/3033" and lts["builds"][0]["manifests"] == [
        f"images/amd64/3033.3.9/{MANIFEST}"
    ]

    # A branch without builds (a typo) is refused, and no index is written for it.
    status, out = _rebuild("--branch", "flatcar-4539", "--conn-id", CACHE_CONN)
    assert status == 1 and out["error"] == "NoBuilds"
    assert (
        "no build manifest of branch 'flatcar-4539'" in out["message"]
        and "flatcar-4593, lts/3033" in out["message"]
    )
    assert cache.head("flatcar-airflow/builds/flatcar-4539.json") == 404
