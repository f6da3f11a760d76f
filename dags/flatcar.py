"""Flatcar Container Linux builds (flatcar-airflow): the full build of main, one OS-only DAG per
supported release branch, the build cache's garbage collection and the release DAG, from the
configuration named by FLATCAR_AIRFLOW_CONFIG.

Parsing reads that YAML file only: no network, git or database access.
"""

# The Airflow modules the pipelines use, named here so that the dag-processor imports them once in its
# own process before it forks each parse ([dag_processor] parsing_pre_import_modules looks for
# ``airflow.*`` imports in the DAG file only): a parse then does not import them again
# (docs/benchmarks.md, parse time).
import airflow.providers.common.compat.sdk
import airflow.providers.standard.decorators.python
import airflow.sdk.bases.sensor
import airflow.sdk.definitions.decorators  # noqa: F401
from airflow.sdk import get_parsing_context

from flatcar_airflow.config import load_config
from flatcar_airflow.pipelines import build_dags
from flatcar_airflow.release import RELEASE_DAG_ID, release_dag
from flatcar_airflow.retention.dag import build_gc_dags

# A task's process parses this file to run one task: it gets that task's DAG only (the dag-processor,
# which gets no DAG id, gets them all).
_config = load_config()
_only = get_parsing_context().dag_id
globals().update(build_dags(_config, only=_only))
globals().update({dag_id: dag for dag_id, dag in build_gc_dags(_config).items() if _only in (None, dag_id)})
if _only in (None, RELEASE_DAG_ID) and _config.release.enabled and _config.release.usable_offers:
    globals()[RELEASE_DAG_ID] = release_dag(_config)
