"""Flatcar Container Linux builds (flatcar-airflow): the full build of main, one OS-only DAG per
supported release branch, the build cache's garbage collection and the release DAG, from the
configuration named by FLATCAR_AIRFLOW_CONFIG.

Parsing reads that YAML file only: no network, git or database access.
"""

from flatcar_airflow.config import load_config
from flatcar_airflow.pipelines import build_dags
from flatcar_airflow.release import RELEASE_DAG_ID, release_dag
from flatcar_airflow.retention.dag import build_gc_dags

_config = load_config()
globals().update(build_dags(_config))
globals().update(build_gc_dags(_config))
if _config.release.enabled and _config.release.usable_offers:
    globals()[RELEASE_DAG_ID] = release_dag(_config)
