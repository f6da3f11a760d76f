"""Flatcar Container Linux builds (flatcar-airflow): the full build of main, one OS-only DAG per
supported release branch, and the build cache's garbage collection, from the configuration named by
FLATCAR_AIRFLOW_CONFIG.

Parsing reads that YAML file only: no network, git or database access.
"""

from flatcar_airflow.config import load_config
from flatcar_airflow.pipelines import build_dags
from flatcar_airflow.retention.dag import build_gc_dags

_config = load_config()
globals().update(build_dags(_config))
globals().update(build_gc_dags(_config))
