"""The branch lock: one build of a branch at a time, whatever started it.

Why: a DAG's ``max_active_runs`` does not cover backfills in Airflow 3. The scheduler counts a
backfill's runs against the backfill's own ``max_active_runs``, so a scheduled or manual nightly can
start while a backfill of the same branch is building. Two builds of one branch at once compete for
the same build hosts and the same build cache paths, so the pipelines open with this sensor.

A run *holds* its branch from the moment its ``branch_lock`` task succeeds until its ``summary`` task
(the last one, ``all_done``) has finished. ``branch_lock`` succeeds once no other run of the DAG holds
the branch. That check and the success that follows are one critical section because the task has
``max_active_tis_per_dag=1``: the scheduler runs at most one ``branch_lock`` of a DAG at a time, across
all its runs, backfills included (it counts queued, running and deferred task instances of every run).
So no other run can take the branch between our check and our success, and the waiting runs queue up
behind the one that waits first.

The sensor pokes (``mode="poke"``): it holds a worker slot while it waits, one per DAG at the most.
Reschedule mode would free the slot, but Airflow 3.3 may fail a rescheduled sensor when a poke's late
executor event arrives after the next poke started (apache/airflow#71172); we saw that happen here.

INPUTS: the task states of the DAG's runs (``branch_lock`` and ``summary``) and the state of the runs
that look like holders, from the Airflow execution API (no database access, no storage of its own).
OUTPUTS: none; the task succeeds when the branch is free, and logs who it waited for.

Re-running part of a finished run (clearing its failed tasks) makes it a holder again without
waiting: its ``branch_lock`` already succeeded. See docs/pipelines.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import BaseSensorOperator

__all__ = ["END_TASK_ID", "LOCK_TASK_ID", "BranchLockSensor", "branch_holders"]

LOCK_TASK_ID = "branch_lock"
END_TASK_ID = "summary"
# Task states after which a run's summary will not run again by itself.
_FINISHED = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
_ACTIVE_RUN_STATES = frozenset({"queued", "running"})


def branch_holders(own_run_id: str, task_states: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Runs (other than ours) that hold the branch: ``{run_id: why}``.

    ``task_states`` maps run ids to ``{task_id: state}`` as the execution API returns them; runs
    without a ``branch_lock`` task (made before it existed) are ignored.
    """
    found: dict[str, str] = {}
    for run_id, states in task_states.items():
        if run_id == own_run_id or LOCK_TASK_ID not in states:
            continue
        lock, end = states.get(LOCK_TASK_ID), states.get(END_TASK_ID)
        if lock == "success" and end not in _FINISHED:
            found[run_id] = f"holds the branch (its {END_TASK_ID} task is {end or 'not started'})"
    return found


class BranchLockSensor(BaseSensorOperator):
    """Wait until no other run of this DAG builds the branch (see the module docstring)."""

    ui_color = "#e8d5f5"

    def __init__(self, *, branch: str, **kwargs: Any) -> None:
        for name, needed in (("mode", "poke"), ("max_active_tis_per_dag", 1)):
            if kwargs.setdefault(name, needed) != needed:
                raise ValueError(f"BranchLockSensor needs {name}={needed!r} (see its module docstring)")
        super().__init__(**kwargs)
        self.branch = branch
        self._reported: dict[str, str] = {}

    def poke(self, context: Mapping[str, Any]) -> bool:
        ti = context["ti"]
        run_id = context["dag_run"].run_id
        states = ti.get_task_states(dag_id=ti.dag_id, task_ids=[LOCK_TASK_ID, END_TASK_ID])
        candidates = branch_holders(run_id, states)
        blocking = {}
        for other, why in candidates.items():
            # A run marked failed or successful by hand may leave its summary unfinished.
            if ti.get_dagrun_state(dag_id=ti.dag_id, run_id=other) in _ACTIVE_RUN_STATES:
                blocking[other] = why
        if blocking:
            if blocking != self._reported:  # one line per change, not one per poke
                for other, why in sorted(blocking.items()):
                    self.log.info("Waiting for branch %s: run %s %s", self.branch, other, why)
                self._reported = blocking
            return False
        self.log.info("Branch %s is free: run %s builds it now", self.branch, run_id)
        return True
