"""flatcar-airflow: Airflow 3 pipelines for Flatcar Container Linux production image builds.

The package registers itself with Airflow through the ``apache_airflow_provider`` entry point
(:func:`get_provider_info`). Importing it must stay cheap: DAG files import it at parse time.
"""

from __future__ import annotations

__version__ = "0.1.0"


def get_provider_info() -> dict:
    """Provider metadata read by Airflow's providers manager (``airflow providers list``)."""
    return {
        "package-name": "flatcar-airflow",
        "name": "Flatcar Container Linux builds",
        "description": "Operators, hooks and DAG factories that run Flatcar's ci-automation build steps.",
        "versions": [__version__],
    }
