"""Benchmark: parsing dags/flatcar.py as the dag-processor does, against a same-shaped file of EmptyOperators.

The dag-processor parses a DAG file in a child process forked from its manager, which has Airflow
imported and, first, imports the ``airflow.*`` modules the DAG file names (``[dag_processor]
parsing_pre_import_modules``); the child runs ``BundleDagBag(dag_folder=<file>, load_op_links=False)``
(airflow/dag_processing/processor.py). So does this benchmark: one parent interpreter imports Airflow's
DagBag, pre-imports the file's Airflow modules with Airflow's own function, forks, and the child times
that one call (the interpreter's start and Airflow's import are not counted: the dag-processor pays
them once).

The baseline is generated in the same run from the DagBag of the real file: the same DAG ids, the same
number of tasks in each DAG, all ``EmptyOperator`` in a chain. Real and baseline are measured in turn
(A B A B …): the figure is the median of the pairwise ratios. Configured: the full build of main plus
``N`` OS-only release branches (``N`` = 1 and 10 by default).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import yaml

from .common import PYTHON, ROOT, Figure, paired, say

DAG_FILE = ROOT / "dags" / "flatcar.py"
PYCACHE = ROOT / "benchmarks" / ".work" / "pycache"
GOAL_RATIO = 1.5
#: Release branch names to configure (any FLATCAR_VERSION_ID-shaped name parses).
BRANCHES = [f"flatcar-{4593 - 17 * n}" for n in range(60)]

PROBE = r"""
import json, os, sys, time
try:
    from airflow.dag_processing.dagbag import BundleDagBag as Bag
    bundle = True
except ImportError:  # an Airflow without bundles
    from airflow.dag_processing.dagbag import DagBag as Bag
    bundle = False


try:
    from airflow.dag_processing.processor import _pre_import_airflow_modules
except ImportError:  # an Airflow without it
    _pre_import_airflow_modules = None


def parse(path, config):
    # In a forked child, as the dag-processor parses: Airflow imported, and the airflow.* modules the
    # DAG file names imported in the parent first ([dag_processor] parsing_pre_import_modules).
    if _pre_import_airflow_modules is not None:
        import structlog
        _pre_import_airflow_modules(path, structlog.get_logger())
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # stdout carries the answers
        os.environ["FLATCAR_AIRFLOW_CONFIG"] = config
        kwargs = {"bundle_path": os.path.dirname(path), "bundle_name": "dags-folder", "load_op_links": False}
        started = time.perf_counter()
        bag = Bag(dag_folder=path, **kwargs) if bundle else Bag(dag_folder=path, include_examples=False)
        seconds = time.perf_counter() - started
        params = {d: {k: v.dump() for k, v in bag.dags[d].params.items()} for d in bag.dags}
        decorated = {d: sum(type(t).__name__ == "_PythonDecoratedOperator" for t in bag.dags[d].tasks)
                     for d in bag.dags}
        out = {"seconds": seconds, "dags": {d: len(bag.dags[d].tasks) for d in sorted(bag.dags)},
               "params": params, "decorated": decorated,
               "errors": {str(k): str(v)[-2000:] for k, v in bag.import_errors.items()}}
        os.write(write, json.dumps(out).encode())
        os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.close(read)
    os.waitpid(pid, 0)
    return json.loads(data)


# Requests on stdin, one JSON list [path, config] a line; one JSON answer a line.
for line in sys.stdin:
    path, config = json.loads(line)
    print(json.dumps(parse(path, config)), flush=True)
"""


class Parser:
    """One interpreter with Airflow imported that parses each file asked for in a forked child."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [PYTHON, "-c", PROBE], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def parse(self, dag_file: Path, config: Path) -> dict:
        self.proc.stdin.write(json.dumps([str(dag_file), str(config)]) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the parse probe exited ({self.proc.wait()})")
        result = json.loads(line)
        if result["errors"]:
            raise RuntimeError(f"{dag_file} does not parse: {result['errors']}")
        return result

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


BASELINE = '''"""The parse benchmark's baseline: {dags} DAGs of EmptyOperators shaped like dags/flatcar.py."""
import datetime
from airflow.sdk import DAG, chain
from airflow.providers.standard.operators.empty import EmptyOperator

SHAPE = {shape!r}
for dag_id, count in SHAPE.items():
    with DAG(dag_id, schedule=None, start_date=datetime.datetime(2026, 1, 1), catchup=False) as dag:
        chain(*[EmptyOperator(task_id=f"task_{{n}}") for n in range(count)])
    globals()[dag_id] = dag
'''


FEATURES = '''"""The parse benchmark's second baseline: the same shape with what Airflow charges for
the features the pipelines use: the same DAG params (UI trigger form) and as many @task tasks."""
import datetime
from airflow.sdk import DAG, Param, chain, task
from airflow.providers.standard.operators.empty import EmptyOperator

SHAPE = {shape!r}
DECORATED = {decorated!r}
PARAMS = {params!r}
for dag_id, count in SHAPE.items():
    params = {{k: Param(v["value"], description=v["description"], **v["schema"])
              for k, v in PARAMS[dag_id].items()}}
    start = datetime.datetime(2026, 1, 1)
    with DAG(dag_id, schedule=None, start_date=start, catchup=False, params=params) as dag:
        tasks = [task(task_id=f"py_{{n}}")(lambda: None)() for n in range(DECORATED[dag_id])]
        chain(*tasks, *[EmptyOperator(task_id=f"task_{{n}}") for n in range(count - len(tasks))])
    globals()[dag_id] = dag
'''


def write_config(path: Path, branches: int) -> None:
    """The full build of main plus ``branches`` OS-only release branches, no schedules."""
    path.write_text(
        yaml.safe_dump(
            {
                "scripts_repo": "https://github.com/flatcar/scripts.git",
                "full": {"enabled": True, "branch": "main"},
                "os": {"branches": BRANCHES[:branches]},
            }
        )
    )


def environment(work: Path, config: Path) -> dict[str, str]:
    """Airflow's settings for parsing, and byte-code caching on (as on a dag-processor host).

    Without compiled byte code every import compiles its module again (about half of a parse here,
    where PYTHONDONTWRITEBYTECODE may be set); a dag-processor's host has it. The cache goes to
    benchmarks/.work/pycache, not next to the sources.
    """
    drop = ("AIRFLOW", "PYTHONDONTWRITEBYTECODE")
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(drop)},
        "PYTHONPYCACHEPREFIX": str(PYCACHE),
        "AIRFLOW_HOME": str(work / "airflow"),
        "FLATCAR_AIRFLOW_CONFIG": str(config),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }


def measure(parser: Parser, branches: int, runs: int, work: Path) -> dict:
    """Real file and its same-shaped baseline with ``branches`` release branches: samples and ratio."""
    config = work / f"flatcar-{branches}.yaml"
    write_config(config, branches)
    shape = parser.parse(DAG_FILE, config)["dags"]
    baseline = work / f"baseline_{branches}" / "baseline_dags.py"
    baseline.parent.mkdir(parents=True, exist_ok=True)
    baseline.write_text(BASELINE.format(dags=len(shape), shape=shape))
    if parser.parse(baseline, config)["dags"] != shape:
        raise RuntimeError("the baseline file has another shape than the DAG file")
    first = parser.parse(DAG_FILE, config)
    features = work / f"features_{branches}" / "features_dags.py"
    features.parent.mkdir(parents=True, exist_ok=True)
    features.write_text(FEATURES.format(shape=shape, decorated=first["decorated"], params=first["params"]))
    if parser.parse(features, config)["dags"] != shape:
        raise RuntimeError("the features baseline has another shape than the DAG file")
    real, base, ratio = paired(
        lambda: parser.parse(DAG_FILE, config)["seconds"],
        lambda: parser.parse(baseline, config)["seconds"],
        runs,
    )
    _, feat, feature_ratio = paired(
        lambda: parser.parse(DAG_FILE, config)["seconds"],
        lambda: parser.parse(features, config)["seconds"],
        max(2, runs // 2),
    )
    return {
        "branches": branches,
        "dags": len(shape),
        "tasks": sum(shape.values()),
        "real": real,
        "baseline": base,
        "ratio": ratio,
        "features": feat,
        "feature_ratio": feature_ratio,
    }


def parse_times(branch_counts: tuple[int, ...], runs: int) -> list[dict]:
    """``measure`` for each number of release branches, in one parent interpreter."""
    results = []
    with tempfile.TemporaryDirectory(prefix="flatcar-bench-parse-") as tmp:
        work = Path(tmp)
        write_config(work / "flatcar.yaml", 1)
        parser = Parser(environment(work, work / "flatcar.yaml"))
        try:
            for branches in branch_counts:
                say(f"parse: {branches} release branch(es), {runs} pairs")
                results.append(measure(parser, branches, runs, work))
        finally:
            parser.close()
    return results


def run(smoke: bool = False, branch_counts: tuple[int, ...] = (1, 10)) -> list[Figure]:
    runs = 2 if smoke else 15
    figures = []
    for result in parse_times((1,) if smoke else branch_counts, runs):
        figures += [figure(result, runs), feature_figure(result, runs)]
    return figures


def figure(result: dict, runs: int) -> Figure:
    real, base = result["real"], result["baseline"]
    return Figure(
        benchmark="parse",
        name=f"parse dags/flatcar.py, {result['branches']} release branch(es) "
        f"({result['dags']} DAGs, {result['tasks']} tasks)",
        value=round(real.median, 4),
        unit="s",
        baseline=f"same-shaped file of EmptyOperators ({result['dags']} DAGs, {result['tasks']} tasks)",
        baseline_value=round(base.median, 4),
        ratio=round(result["ratio"], 2),
        goal=f"≤ {GOAL_RATIO}× baseline",  # noqa: RUF001
        met=result["ratio"] <= GOAL_RATIO,
        minimum=round(real.min, 4),
        runs=runs,
        extra={"baseline_min": round(base.min, 4), "dags": result["dags"], "tasks": result["tasks"]},
    )


def feature_figure(result: dict, runs: int) -> Figure:
    return Figure(
        benchmark="parse",
        name=f"parse dags/flatcar.py, {result['branches']} release branch(es), against Airflow's cost "
        "of the features it uses",
        value=round(result["real"].median, 4),
        unit="s",
        baseline="the same shape with the same DAG params and @task tasks",
        baseline_value=round(result["features"].median, 4),
        ratio=round(result["feature_ratio"], 2),
        minimum=round(result["real"].min, 4),
        runs=max(2, runs // 2),
    )
