"""The ``garbage_collect`` task: the build cache's retention, decided here, carried out by the scripts.

INPUTS:  the configuration (its ``retention`` section, the build DAGs, the runner), the build cache
         connection, the scripts origin's tags, the builds index, and the queued and running runs of the
         build DAGs (their ``version`` and ``tag`` XComs, through the execution API);
         ``apply`` (templated; the DAG's ``apply`` param, false by default).
OUTPUTS: the report (XCom, the task log, and ``flatcar-airflow/gc/report.json`` in the cache, which the
         builds page shows); when applying, the scripts' ``garbage_collect`` has removed the purged
         versions' paths and tags, and the task has checked that they are gone.

It runs in the tagging pool taking *all* its slots, so no build tags a version while it decides and
removes (docs/retention.md): versions a run already references are protected, and a run that has not
tagged yet tags after the collection. See :mod:`flatcar_airflow.retention.collector`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["BuildCacheGCOperator"]


def _true(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes", "y")


class BuildCacheGCOperator(BaseOperator):
    """One garbage collection of the build cache (a dry run unless ``apply``).

    :param config: the deployment's configuration
    :param apply: remove what the policy says goes (default: report only)
    """

    template_fields = ("apply",)
    ui_color = "#f5e0d5"

    def __init__(self, *, config: Config, apply: Any = False, **kwargs) -> None:
        kwargs.setdefault("pool", config.pools.tagging.name)
        kwargs.setdefault("pool_slots", config.pools.tagging.slots)
        super().__init__(**kwargs)
        self.config = config
        self.apply = apply
        self._runner = None

    def execute(self, context) -> dict:
        from ..hooks.buildcache import BuildCacheHook
        from ..retention.collector import build_dag_ids, collect, in_use_from_task
        from ..runners import job_key, make_runner

        ti = context["ti"]
        apply = _true(self.apply)
        in_use, in_use_versions = in_use_from_task(ti, build_dag_ids(self.config))
        hook = BuildCacheHook(self.config.buildcache_conn_id)

        def runner():
            self._runner = make_runner(self.config.runner)
            return self._runner

        try:
            return collect(
                self.config,
                hook,
                apply=apply,
                in_use=in_use,
                in_use_versions=in_use_versions,
                key=job_key(ti.dag_id, ti.run_id, ti.task_id),
                attempt=int(ti.try_number or 1),
                say=self.log.info,
                runner_factory=runner,
            )
        except RuntimeError as err:
            raise AirflowException(str(err)) from None

    def on_kill(self) -> None:
        if self._runner is not None:
            self._runner.kill()
