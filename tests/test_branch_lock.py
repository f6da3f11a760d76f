"""Who holds a branch, from the task states of a DAG's runs (the branch lock's decision, pure logic).
The lock under a real scheduler, against a backfill, is tested in test_scheduler.py."""

from __future__ import annotations

import pytest

from flatcar_airflow.operators.branch_lock import branch_holders

OWN = "scheduled__2026-11-25T21:00:00+00:00"


def states(lock, summary=None, **others):
    return {"branch_lock": lock, "summary": summary, **others}


def test_a_free_branch_has_no_holders():
    assert branch_holders(OWN, {OWN: states("running")}) == {}
    finished = {
        f"backfill__2026-11-2{n}": states("success", end)
        for n, end in enumerate(["success", "failed", "skipped", "upstream_failed", "removed"])
    }
    assert branch_holders(OWN, {OWN: states("running"), **finished}) == {}


@pytest.mark.parametrize("summary", [None, "scheduled", "queued", "running", "up_for_retry", "deferred"])
def test_a_run_past_its_lock_holds_the_branch_until_its_summary_finished(summary):
    holders = branch_holders(OWN, {OWN: states("running"), "backfill__a": states("success", summary)})
    assert list(holders) == ["backfill__a"]
    assert "holds the branch" in holders["backfill__a"]


@pytest.mark.parametrize(
    "lock", [None, "scheduled", "queued", "running", "up_for_reschedule", "failed", "skipped"]
)
def test_waiting_or_failed_locks_do_not_hold(lock):
    assert branch_holders(OWN, {OWN: states("running"), "backfill__c": states(lock)}) == {}


def test_runs_made_before_the_lock_existed_are_ignored():
    assert branch_holders(OWN, {OWN: states("running"), "scheduled__old": {"summary": None}}) == {}


def test_the_lock_task_is_a_critical_section_across_all_runs():
    from flatcar_airflow.operators import BranchLockSensor

    sensor = BranchLockSensor(task_id="branch_lock", branch="main")
    assert sensor.max_active_tis_per_dag == 1 and sensor.mode == "poke"
    with pytest.raises(ValueError, match="mode='poke'"):
        BranchLockSensor(task_id="lock", branch="main", mode="reschedule")
    with pytest.raises(ValueError, match="max_active_tis_per_dag=1"):
        BranchLockSensor(task_id="lock", branch="main", max_active_tis_per_dag=2)
