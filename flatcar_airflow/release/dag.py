"""The ``flatcar_release`` DAG factory (parse time: no network, git or database access).

Shape: ``check`` → ``release`` → ``record``. ``check`` refuses, before any side effect, a version that may
not be released (:mod:`.checks`) and in a dry run (the default) logs what would be published; ``release``
runs the scripts' ``release_build`` through the configured runner (skipped in a dry run); ``record``
writes what was published into the build's manifests and builds index entry (:mod:`.record`).

One release at a time: ``max_active_runs=1`` (the DAG has no schedule, so no backfill can add runs) and
the ``release`` task's ``max_active_tis_per_dag=1``, so two releases of one version never run at once.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from airflow.sdk import DAG, Param, task

from ..config import Config
from ..operators import ReleaseOperator

_log = logging.getLogger(__name__)

__all__ = ["RELEASE_DAG_ID", "release_dag"]

RELEASE_DAG_ID = "flatcar_release"
# As the build DAGs' version param (pipelines.py): "$(?!\n)" so "x\n" does not pass.
_TAG_PATTERN = (
    r"^(main|alpha|beta|stable|lts)-(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(-[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)?$(?!\n)"
)


def _params(config: Config) -> dict[str, Param]:
    offers = config.release.usable_offers
    return {
        "version": Param(
            None,  # no default: the form asks for it, a trigger without it is refused
            type="string",
            pattern=_TAG_PATTERN,
            maxLength=128,
            title="Version tag",
            description="The tested build to release, e.g. stable-4593.2.5: a build of a release branch ("
            + ", ".join(config.os.branches or ["none configured"])
            + ") whose tests passed and whose artifacts are in the build cache.",
        ),
        "offers": Param(
            list(offers),
            type="array",
            items={"type": "string", "enum": list(offers)},
            minItems=1,
            uniqueItems=True,
            examples=list(offers),
            title="Cloud offers",
            description="Where release_build publishes the build.",
        ),
        "dry_run": Param(
            True,
            type="boolean",
            title="Dry run",
            description="Check the version and show what would be published, and publish nothing.",
        ),
    }


def release_dag(config: Config) -> DAG:
    dag = DAG(
        RELEASE_DAG_ID,
        schedule=None,
        start_date=dt.datetime.combine(config.start_date, dt.time(), tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        params=_params(config),
        tags=["flatcar", "release"],
        doc_md="Release a tested build of a release branch to the cloud offers. See docs/release.md.",
        default_args={"retries": 0, "queue": config.queue},
    )
    with dag:
        plan = _check_task(config)()
        release = ReleaseOperator(
            task_id="release",
            build=plan,
            offer_conn_ids=config.release.offers,
            scripts_repo=config.scripts_repo,
            runner=config.runner,
            buildcache_conn_id=config.buildcache_conn_id,
            secrets_conn_id=config.secrets_conn_id,
            signing_conn_id=config.signing_conn_id,
            env=dict(config.step_env),
            heartbeat_interval=config.heartbeat_interval,
            pool=config.pools.steps.name,
            web=config.web,
            max_active_tis_per_dag=1,
        )
        release >> _record_task(config)()
    return dag


def _check_task(config: Config):
    @task(task_id="check")
    def check(**context: Any) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from .checks import ReleaseRefused, check_release

        try:
            plan = check_release(config, context["params"])
        except ReleaseRefused as err:
            raise AirflowFailException(f"release refused: {err}") from None
        what = f"{plan['tag']} (a build of {plan['branch']}, run {plan['build_run_id']})"
        where = ", ".join(plan["offers"])
        if plan["dry_run"]:
            _log.info("Dry run: %s would be published to %s; nothing is published", what, where)
        else:
            _log.info("Releasing %s to %s", what, where)
        _log.info("Its tests passed and its %d artifacts are in the build cache", plan["artifacts_checked"])
        return plan

    return check


def _record_task(config: Config):
    @task(task_id="record")
    def record(**context: Any) -> dict:
        from .record import record_release

        return record_release(config, context)

    return record
