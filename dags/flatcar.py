"""Flatcar Container Linux builds (flatcar-airflow): the full build of main and one OS-only DAG per
supported release branch, from the configuration named by FLATCAR_AIRFLOW_CONFIG.

Parsing reads that YAML file only: no network, git or database access.
"""

from flatcar_airflow.config import load_config
from flatcar_airflow.pipelines import build_dags

globals().update(build_dags(load_config()))
