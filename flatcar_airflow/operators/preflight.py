"""The ``preflight`` task: the build host checked before a build's first step on it.

INPUTS:  the runner configuration of the steps it guards (the same host, queue and runner), the build
         cache connection, the configuration's ``preflight`` section; the run's ``arches`` param.
OUTPUTS: XCom: the report (every check and its level); on failure also ``failure`` (kind ``preflight``,
         the sentence naming every problem), which the summary puts into the manifest and the index.

The pipelines run it after the version task (a run with refused params touches no build host) and
before the tag, so a host that cannot build fails the run in seconds, naming every problem at once,
before a version tag exists
(flatcar_airflow/preflight/ does the checking).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

__all__ = ["PreflightOperator"]


class PreflightOperator(BaseOperator):
    """Run the preflight checks where ``runner`` runs the steps.

    :param runner: the runner configuration of the steps this check guards
    :param buildcache_conn_id: the build cache connection (its ssh and HTTPS address are checked)
    :param options: the configuration's ``preflight`` section (as a dict)
    :param arch: the architecture whose steps it guards (skipped when the run builds other arches only)
    """

    ui_color = "#fff4d6"

    def __init__(
        self,
        *,
        runner: Mapping[str, Any],
        buildcache_conn_id: str,
        options: Mapping[str, Any],
        arch: str | None = None,
        **kwargs,
    ) -> None:
        kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)
        self.runner_config = dict(runner)
        self.buildcache_conn_id = buildcache_conn_id
        self.options = dict(options)
        self.arch = arch

    def execute(self, context) -> dict:
        from ..config import Preflight
        from ..hooks.buildcache import BuildCacheHook
        from ..preflight import describe, run_preflight
        from ..runners import make_runner

        arches = (context.get("params") or {}).get("arches")
        if self.arch and isinstance(arches, list) and self.arch not in arches:
            raise AirflowSkipException(f"this run builds {', '.join(arches)}, not {self.arch}")
        settings = BuildCacheHook(self.buildcache_conn_id).settings
        report = run_preflight(make_runner(self.runner_config), Preflight(**self.options), settings)
        for line in describe(report):
            self.log.info("%s", line)
        if not report.ok:
            message = report.message()
            context["ti"].xcom_push(key="failure", value={"kind": "preflight", "summary": message})
            raise AirflowFailException(message)
        if report.warnings:
            self.log.warning("%s", report.message())
        return report.to_dict()
