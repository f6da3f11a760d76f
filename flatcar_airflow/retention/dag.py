"""The ``flatcar_buildcache_gc`` DAG: the build cache's retention, daily by default (docs/retention.md).

Built at parse time from the configuration's ``retention`` section, with no network, git or database
access. One task, ``garbage_collect`` (``BuildCacheGCOperator``, operators/garbage_collect.py): a dry run
unless the run's ``apply`` param is true. Its default is ``retention.apply`` (false: scheduled runs report
only; apply from the trigger form or with ``airflow dags trigger -c '{"apply": true}'``).
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, CronTriggerTimetable, Param

from ..config import Config

__all__ = ["GC_DAG_ID", "build_gc_dags", "gc_dag"]

GC_DAG_ID = "flatcar_buildcache_gc"


def build_gc_dags(config: Config) -> dict[str, DAG]:
    return {GC_DAG_ID: gc_dag(config)} if config.retention.enabled else {}


def gc_dag(config: Config) -> DAG:
    from ..operators.garbage_collect import BuildCacheGCOperator

    retention = config.retention
    schedule = retention.schedule
    dag = DAG(
        GC_DAG_ID,
        schedule=CronTriggerTimetable(schedule, timezone="UTC") if schedule else None,
        start_date=dt.datetime.combine(config.start_date, dt.time(), tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        tags=["flatcar", "retention"],
        doc_md=(
            f"Build cache retention: keep the newest {retention.keep} development builds per branch and "
            f"everything younger than {retention.min_age_days} days, releases, pinned builds, builds in use "
            "and each supported branch's last good nightly; the rest goes through the scripts' "
            "garbage_collect. A dry run unless `apply`. See docs/retention.md."
        ),
        params={
            "apply": Param(
                retention.apply,
                type="boolean",
                title="Apply",
                description="Remove what the report lists (cache paths and tags). "
                "Off: a dry run, the report only.",
            ),
        },
        default_args={"retries": 0, "queue": config.queue},
    )
    with dag:
        BuildCacheGCOperator(task_id="garbage_collect", config=config, apply="{{ params.apply }}")
    return dag
