"""Hostile input (issue 10, section 2): every case of ``tests/hostile_inputs.yaml`` is refused before any
side effect, with a message that names the field, through every channel it lists.

The channels are the ways a value reaches flatcar-airflow: a run triggered through the REST API (a client's
body, and the body the UI's trigger form sends to the same endpoint) of a real Airflow (api-server,
scheduler, dag-processor, LocalExecutor); the ``flatcar-airflow`` command as a subprocess; the configuration
file; the build cache connection. "Before any side effect" is checked, not assumed: a ``git`` shim first on
the PATH of the CLI and of Airflow's processes (task processes included) logs every git command; the
tagging cache directories (``tagging_cache`` and ``FLATCAR_AIRFLOW_CACHE``) must not come into existence;
the build cache's file tree and the origin's refs (``git for-each-ref``) must not change; and the canary
file that the shell-injection values would create must not appear. Control tests show the shim and the
snapshots do see what a value that gets through does, so a refusal is not merely a blind harness.

A case that exposes a gap in code another change owns carries ``xfail`` in the data file; it runs as
``xfail(strict=True)``, so it turns red once the fix lands and the mark must be removed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from airflow_servers import AirflowServers, airflow_env
from connections import CACHE_CONN, cache_connection
from infra import MiniOrigin

HERE = Path(__file__).resolve().parent
CORPUS_FILE = HERE / "hostile_inputs.yaml"
CORPUS: list[dict] = yaml.safe_load(CORPUS_FILE.read_text())
CHANNELS = ("rest", "ui", "cli", "config", "connection")
EXE = shutil.which("flatcar-airflow", path=str(Path(sys.executable).parent)) or "flatcar-airflow"
REAL_GIT = shutil.which("git") or "/usr/bin/git"
FULL_DAG = "flatcar_full"
#: The OS-only pipelines the cases' runs are spread over: each pipeline's branch lock lets one run build at
#: a time, and so many runs of one pipeline would take turns.
OS_BRANCHES = ["flatcar-4593", "flatcar-4594", "flatcar-4595"]
OS_DAGS = [f"flatcar_os_{branch.replace('-', '_')}" for branch in OS_BRANCHES]
OS_DAG = OS_DAGS[0]
DAGS = [FULL_DAG, *OS_DAGS]
NIGHT = "2026-08-21T21:00Z"

#: Where the injected commands would write. One directory for the whole module, outside every tree a test
#: snapshots, so any file appearing in it is a command that ran.
CANARY_DIR = Path(tempfile.mkdtemp(prefix="fa-hostile-canary-"))
CANARY = CANARY_DIR / "canary"


def _expand(value):
    """The case's value with ``{canary}`` and ``{c*N}`` filled in (lists and mappings element-wise)."""
    if isinstance(value, list):
        return [_expand(item) for item in value]
    if isinstance(value, dict):
        return {_expand(key): _expand(item) for key, item in value.items()}
    if not isinstance(value, str):
        return value
    value = value.replace("{canary}", str(CANARY))
    return re.sub(r"\{(.)\*(\d+)\}", lambda m: m[1] * int(m[2]), value)


def _cases(*channels: str) -> list:
    """pytest params of the corpus cases for ``channels`` (one per case and channel), xfail marks set."""
    params = []
    for case in CORPUS:
        for channel in channels:
            if channel not in case["channels"]:
                continue
            xfail = case.get("xfail")
            reason = xfail.get(channel) if isinstance(xfail, dict) else xfail
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            ident = case["id"] if len(channels) == 1 else f"{channel}-{case['id']}"
            params.append(pytest.param(case, channel, id=ident, marks=marks))
    return params


def _names_the_field(case: dict, message: str) -> None:
    lowered = message.lower()
    missing = [word for word in case["refusal"] if word.lower() not in lowered]
    assert not missing, f"the refusal does not name {missing}: {message[:1500]!r}"


def _tree(root: Path) -> dict[str, tuple[int, int]] | None:
    """Every file and directory under ``root`` with size and mtime (None: ``root`` does not exist)."""
    if not root.exists():
        return None
    found = {}
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        found[str(path.relative_to(root))] = (stat.st_size if path.is_file() else -1, stat.st_mtime_ns)
    return found


def _refs(origin: MiniOrigin) -> str:
    return subprocess.run(
        [REAL_GIT, "for-each-ref", "--format=%(refname) %(objectname)"],
        cwd=origin.path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _canaries() -> list[str]:
    return sorted(path.name for path in CANARY_DIR.iterdir())


@pytest.fixture(scope="module")
def git_shim(tmp_path_factory) -> Path:
    """A directory with a ``git`` that logs each command (with the Airflow run it ran for) and runs git.

    Processes find it first on their PATH; where ``FLATCAR_TEST_GIT_LOG`` is set, each invocation appends
    ``<run id or ->\\t<arguments, shell-quoted>``. Airflow's task runner exports the run id as
    ``AIRFLOW_CTX_DAG_RUN_ID``, so a git command in a task process names its run.
    """
    shim = tmp_path_factory.mktemp("git-shim")
    (shim / "git").write_text(
        "#!/bin/bash\n"
        'if [ -n "${FLATCAR_TEST_GIT_LOG:-}" ]; then\n'
        '    printf \'%s\\t\' "${AIRFLOW_CTX_DAG_RUN_ID:--}" >>"$FLATCAR_TEST_GIT_LOG"\n'
        '    printf \'%q \' "$@" >>"$FLATCAR_TEST_GIT_LOG"\n'
        "    printf '\\n' >>\"$FLATCAR_TEST_GIT_LOG\"\n"
        "fi\n"
        f'exec {shlex.quote(REAL_GIT)} "$@"\n'
    )
    (shim / "git").chmod(0o755)
    return shim


def _git_commands(log: Path, run_id: str | None = None) -> list[str]:
    """The logged git commands (of ``run_id`` only, when given), without ``git version``.

    GitPython runs ``git version`` when it is imported, to find git: that reads nothing and writes
    nothing, and every process that imports flatcar_airflow runs it.
    """
    if not log.exists():
        return []
    commands = []
    for line in log.read_text().splitlines():
        run, _, command = line.partition("\t")
        if command.strip() == "version" or (run_id is not None and run != run_id):
            continue
        commands.append(line)
    return commands


def test_the_corpus_is_well_formed():
    """At least 40 cases, unique ids, known channels, and each one says what its refusal must name."""
    assert len(CORPUS) >= 40
    ids = [case["id"] for case in CORPUS]
    assert len(ids) == len(set(ids)), "case ids repeat"
    for case in CORPUS:
        assert set(case) <= {"id", "channels", "field", "value", "refusal", "dag", "argv", "xfail"}, case
        assert case["channels"] and set(case["channels"]) <= set(CHANNELS), case["id"]
        assert case["refusal"] and all(isinstance(word, str) for word in case["refusal"]), case["id"]
        assert "value" in case and case.get("field"), case["id"]
        if isinstance(case.get("xfail"), dict):
            assert set(case["xfail"]) <= set(case["channels"]), case["id"]
    # Every kind of hostility the issue lists is in the corpus.
    values = json.dumps([_expand(case["value"]) for case in CORPUS], ensure_ascii=False)
    for needle in ("$(", "`", ";", "--upload-pack=", "../", "\\n", "FLATCAR_SDK_VERSION=", "ä", "a" * 200):
        assert needle in values, needle


# -- configuration file ----------------------------------------------------------------------------------


def _config_with(field: str, value) -> dict:
    data: dict = {"scripts_repo": "https://example.org/scripts.git", "arches": {"amd64": {}, "arm64": {}}}
    *parents, last = field.split(".")
    where = data
    for part in parents:
        where = where.setdefault(part, {})
    where[last] = value
    return data


@pytest.mark.parametrize(("case", "channel"), _cases("config"))
def test_the_configuration_file_refuses(case, channel, tmp_path):
    """load_config (the DAG file's and the commands' way in) raises ConfigError naming the key."""
    from flatcar_airflow.config import ConfigError, load_config

    path = tmp_path / "flatcar.yaml"
    path.write_text(yaml.safe_dump(_config_with(case["field"], _expand(case["value"]))))
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    _names_the_field(case, str(refused.value))
    assert _canaries() == []


# -- the build cache connection --------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "channel"), _cases("connection"))
def test_the_build_cache_connection_refuses(case, channel, build_cache, monkeypatch):
    """BuildCacheHook.settings refuses the connection naming the field; so does an upload, which reads the
    settings before it runs ssh or rsync, and the cache is left as it was."""
    from flatcar_airflow.hooks.buildcache import BuildCacheHook

    connection = cache_connection(build_cache)
    value = _expand(case["value"])
    if case["field"] in ("host", "login", "port", "schema"):
        connection[case["field"]] = value
    else:
        connection["extra"][case["field"]] = value
    monkeypatch.setenv("AIRFLOW_CONN_HOSTILE_CACHE", json.dumps(connection))
    before = _tree(build_cache.root)
    with pytest.raises(ValueError) as refused:
        BuildCacheHook("hostile_cache").settings  # noqa: B018 - reading the settings is the check
    _names_the_field(case, str(refused.value))
    with pytest.raises(ValueError):
        BuildCacheHook("hostile_cache").upload("hostile/probe.json", b"{}")
    assert _tree(build_cache.root) == before
    assert _canaries() == []


# -- the command ---------------------------------------------------------------------------------------


def _tag_argv(argv: list[str], origin: str, cache_dir: Path) -> list[str]:
    """``tag`` with the options the case does not set: the nightly of an OS build of main."""
    given = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
    defaults = [("--repo", origin), ("--ref", "main"), ("--kind", "os"), ("--cache-dir", str(cache_dir))]
    if "--version" not in given:
        defaults += [("--nightly", None), ("--at", NIGHT)]
    extra = []
    for option, value in defaults:
        if option not in given:
            extra += [option] if value is None else [f"{option}={value}"]
    return [argv[0], *extra, *argv[1:]]


CLI_CACHE_CONN = "flatcar_hostile_cache"


@pytest.fixture
def cli_world(mini_origin, build_cache, tmp_path, git_shim):
    """What a ``flatcar-airflow`` subprocess may touch, and how to run one with the git shim (and a
    connection to the build cache, so a command that let a value through could write there)."""
    world = {
        "origin": mini_origin,
        "build_cache": build_cache,
        "cache": tmp_path / "tag-cache",
        "env_cache": tmp_path / "env-cache",
        "git_log": tmp_path / "git.log",
    }

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "PATH": f"{git_shim}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
            "FLATCAR_TEST_GIT_LOG": str(world["git_log"]),
            "FLATCAR_AIRFLOW_CACHE": str(world["env_cache"]),
            f"AIRFLOW_CONN_{CLI_CACHE_CONN.upper()}": json.dumps(cache_connection(build_cache)),
        }
        return subprocess.run(
            [EXE, *argv], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path
        )

    world["run"] = run
    return world


def _cli_argv(case: dict, world: dict) -> list[str]:
    value = _expand(case["value"])
    argv = case.get("argv") or ["tag", f"--{case['field'].replace('_', '-')}={{value}}"]
    fill = {"{value}": value, "{origin}": world["origin"].url, "{cache_conn}": CLI_CACHE_CONN}
    argv = [re.sub(r"\{value\}|\{origin\}|\{cache_conn\}", lambda m: fill[m[0]], arg) for arg in argv]
    if argv[0] == "tag":
        argv = _tag_argv(argv, world["origin"].url, world["cache"])
    return argv


@pytest.mark.parametrize(("case", "channel"), _cases("cli"))
def test_the_command_refuses(case, channel, cli_world):
    """Exit status 2 (invalid input: nothing was done), the message names the option, and indeed nothing
    was done: no git command, no tagging cache directory, the origin's refs and the build cache as they
    were, no canary."""
    refs, cache = _refs(cli_world["origin"]), _tree(cli_world["build_cache"].root)
    proc = cli_world["run"](_cli_argv(case, cli_world))
    message = proc.stderr
    if proc.stdout.strip():
        out = json.loads(proc.stdout)
        assert not out["ok"], out
        message = f"{out['message']}\n{proc.stderr}"
    assert proc.returncode == 2, f"exit {proc.returncode}: {message}"
    _names_the_field(case, message)
    assert _git_commands(cli_world["git_log"]) == []
    assert not cli_world["cache"].exists() and not cli_world["env_cache"].exists()
    assert _refs(cli_world["origin"]) == refs
    assert _tree(cli_world["build_cache"].root) == cache
    assert _canaries() == []


def test_the_command_harness_sees_git_and_the_cache(cli_world):
    """Control: a valid tag command does show up in the git log, the cache and the origin's refs."""
    refs = _refs(cli_world["origin"])
    argv = ["tag", "--version=main-4799.0.1-hostile-control", "--kind=full"]
    proc = cli_world["run"](_tag_argv(argv, cli_world["origin"].url, cli_world["cache"]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    commands = "\n".join(_git_commands(cli_world["git_log"]))
    assert "ls-remote" in commands and "push" in commands
    assert cli_world["cache"].exists()
    assert _refs(cli_world["origin"]) != refs


# -- the REST API and the UI's trigger form --------------------------------------------------------------


def _body(channel: str, conf: dict) -> dict:
    if channel == "ui":
        # What the UI's trigger form posts (airflow/ui: useTrigger -> DagRunService.triggerDagRun).
        return {
            "conf": conf,
            "data_interval_end": None,
            "data_interval_start": None,
            "logical_date": None,
            "partition_key": None,
        }
    return {"logical_date": None, "conf": conf}


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, _mini_origin_template, build_cache, git_shim):
    """One real Airflow for every REST case: api-server, scheduler and dag-processor (LocalExecutor,
    SQLite), the pipelines on a copy of the mini origin, the loopback build cache, the git shim first on
    the PATH of all its processes."""
    base = tmp_path_factory.mktemp("hostile-airflow")
    origin = MiniOrigin(base / "origin.git")
    shutil.copytree(_mini_origin_template.path, origin.path, symlinks=True)
    home = base / "airflow-home"
    home.mkdir()
    config = base / "flatcar.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "scripts_repo": str(origin.path),
                "buildcache_conn_id": CACHE_CONN,
                "runner": {"type": "local", "root": str(base / "build-root")},
                "tagging_cache": str(base / "tag-cache"),
                "arches": {"amd64": {"formats": ["qemu_uefi"], "test_vendors": ["qemu_uefi"]}},
                "full": {"arches": ["amd64"], "schedule": None},
                "os": {"branches": OS_BRANCHES, "arches": ["amd64"], "schedule": None},
                "image_changes": None,
                "retries": 0,
                "max_active_runs": 16,
                "branch_lock": {"poke_interval": 1},
                # The preflight task runs after the version task, so no refused run reaches it; it is
                # off here so that "nothing after version ran" needs no exception for it.
                # tests/test_preflight.py covers it (including its place after the version task).
                "preflight": {"enabled": False},
            }
        )
    )
    git_log = base / "git.log"
    env = airflow_env(home, config)
    env.update(
        {
            "PATH": f"{git_shim}{os.pathsep}{env['PATH']}",
            "FLATCAR_TEST_GIT_LOG": str(git_log),
            "FLATCAR_AIRFLOW_CACHE": str(base / "env-cache"),
            f"AIRFLOW_CONN_{CACHE_CONN.upper()}": json.dumps(cache_connection(build_cache)),
        }
    )
    server = AirflowServers(home, env)
    server.cli("db", "migrate")
    server.start("api-server")
    server.start("dag-processor")
    server.start("scheduler")
    try:
        server.wait_healthy()
        server.set_pools()
        for dag_id in DAGS:
            server.wait_for_dag(dag_id)
        server.origin, server.git_log, server.base = origin, git_log, base
        yield server
    finally:
        server.stop()


def _snapshot(airflow, build_cache) -> dict:
    return {
        "refs": _refs(airflow.origin),
        "cache": _tree(build_cache.root),
        "tag_cache": (airflow.base / "tag-cache").exists(),
        "env_cache": (airflow.base / "env-cache").exists(),
        "build_root": (airflow.base / "build-root").exists(),
        "canaries": _canaries(),
    }


def _version_error(airflow, dag_id: str, run_id: str) -> str:
    """The version task's refusal (``invalid params: …``) as its log records the exception: only the
    message, not the traceback's file names, so the words must be in what a user reads."""
    response = airflow.api.get(
        f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/version/logs/1",
        params={"full_content": "true"},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    messages = []
    for event in response.json()["content"]:
        if isinstance(event, dict):
            messages += [str(detail.get("exc_value")) for detail in event.get("error_detail") or []]
    return "\n".join(message for message in messages if "invalid params" in message)


def _trigger(airflow, dag_id: str, body: dict):
    """POST a run; again after a 500 "Database error" (SQLite busy with another component's write: the
    request was rolled back, as a user would find, and retry)."""
    for _attempt in range(3):
        response = airflow.api.post(f"/dags/{dag_id}/dagRuns", json=body)
        if response.status_code != 500 or "Database error" not in response.text:
            break
        time.sleep(1)
    return response


@pytest.fixture(scope="module")
def rest_outcomes(airflow, build_cache):
    """Trigger every REST and UI case at once, wait for the runs they created, and record what happened
    (and, after all of them, the snapshots) before the control run below changes anything."""
    before = _snapshot(airflow, build_cache)
    outcomes = {}
    # The pipelines are paused (as Airflow creates them) while the cases are posted: SQLite takes one writer
    # at a time, and a scheduler busy with the first runs made trigger requests wait for seconds, or fail.
    for number, param in enumerate(_cases("rest", "ui")):
        case, channel = param.values
        dag_id = FULL_DAG if case.get("dag") == "full" else OS_DAGS[number % len(OS_DAGS)]
        conf = {case["field"]: _expand(case["value"])}
        response = _trigger(airflow, dag_id, _body(channel, conf))
        assert response.status_code in (200, 400), (param.id, response.status_code, response.text)
        outcome = {"dag_id": dag_id, "status": response.status_code, "text": response.text}
        if response.status_code == 200:
            outcome["run_id"] = response.json()["dag_run_id"]
        outcomes[param.id] = outcome
    for dag_id in DAGS:
        assert airflow.api.patch(f"/dags/{dag_id}", json={"is_paused": False}).status_code == 200
    started = time.monotonic()
    for outcome in outcomes.values():
        if "run_id" not in outcome:
            continue
        run = f"/dags/{outcome['dag_id']}/dagRuns/{outcome['run_id']}"
        airflow.wait(
            lambda run=run: (airflow.get(run) or {}).get("state") in ("success", "failed"),
            max(10.0, 240 - (time.monotonic() - started)),
            f"{run} to finish",
        )
        outcome["tasks"] = {
            task_id: ti["state"]
            for task_id, ti in airflow.task_instances(outcome["run_id"], outcome["dag_id"]).items()
        }
        outcome["error"] = _version_error(airflow, outcome["dag_id"], outcome["run_id"])
    return {"cases": outcomes, "before": before, "after": _snapshot(airflow, build_cache)}


@pytest.mark.parametrize(("case", "channel"), _cases("rest", "ui"))
def test_a_triggered_run_refuses(case, channel, rest_outcomes, airflow, request):
    """Refused at the trigger (400 from the params' schema, naming the param: no run) or by the run's first
    task, ``version``, naming the param: then nothing after it ran, and no git command ran for the run."""
    outcome = rest_outcomes["cases"][request.node.callspec.id]
    if outcome["status"] == 400:
        _names_the_field(case, outcome["text"])
        assert "Invalid input for param" in outcome["text"]
        return
    tasks = outcome["tasks"]
    assert tasks["branch_lock"] == "success" and tasks["version"] == "failed", tasks
    later = {task_id: state for task_id, state in tasks.items() if task_id not in ("branch_lock", "version")}
    assert later.pop("summary") == "failed", tasks
    assert set(later.values()) == {"upstream_failed"}, tasks
    assert outcome["error"], "the version task's log has no 'invalid params' refusal"
    _names_the_field(case, outcome["error"])
    assert _git_commands(airflow.git_log, outcome["run_id"]) == []


def test_the_triggered_runs_left_no_trace(rest_outcomes, airflow):
    """After all REST and UI cases: no git command in any Airflow process, no tagging cache directory, no
    build root, the build cache and the origin's refs as they were, no canary."""
    before, after = rest_outcomes["before"], rest_outcomes["after"]
    # Some cases pass the params' schema ('..' in a ref, build id, version or seed SDK), so the version
    # task's own checks are exercised too, not only the schema's.
    assert any("run_id" in outcome for outcome in rest_outcomes["cases"].values())
    assert _git_commands(airflow.git_log) == []
    assert after == before
    assert not (after["tag_cache"] or after["env_cache"] or after["build_root"] or after["canaries"])


def test_the_airflow_harness_sees_git_in_task_processes(rest_outcomes, airflow, build_cache):
    """Control, after the cases: a ref that passes every check (but names no branch) gets as far as
    ``git ls-remote`` in the version task, and the shim logs it under the run's id."""
    response = airflow.api.post(f"/dags/{OS_DAG}/dagRuns", json=_body("rest", {"ref": "no-such-branch"}))
    assert response.status_code == 200, response.text
    run_id = response.json()["dag_run_id"]
    version = f"/dags/{OS_DAG}/dagRuns/{run_id}/taskInstances/version"
    airflow.wait(lambda: (airflow.get(version) or {}).get("state") == "failed", 120, "the control to fail")
    commands = _git_commands(airflow.git_log, run_id)
    assert any("ls-remote" in command for command in commands), commands
    assert (airflow.base / "tag-cache").exists()
