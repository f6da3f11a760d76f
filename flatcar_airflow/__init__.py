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
        "connection-types": [
            {
                "connection-type": "flatcar_buildcache",
                "hook-class-name": "flatcar_airflow.hooks.buildcache.BuildCacheHook",
                "hook-name": "Flatcar build cache",
            }
        ],
        "hooks": [
            {
                "integration-name": "Flatcar build cache",
                "python-modules": ["flatcar_airflow.hooks.buildcache"],
            }
        ],
        "operators": [
            {
                "integration-name": "Flatcar build steps",
                "python-modules": ["flatcar_airflow.operators.step", "flatcar_airflow.operators.steps"],
            }
        ],
        # The step tasks' extra links (links.py). Airflow 3 shows them from the URL each task stored,
        # without importing the classes; listing them tells the providers manager they are ours.
        "extra-links": ["flatcar_airflow.links.BuildCacheLink", "flatcar_airflow.links.VersionTagLink"],
        "integrations": [
            {
                "integration-name": "Flatcar build cache",
                "external-doc-url": "https://www.flatcar.org/docs/latest/",
            },
            {
                "integration-name": "Flatcar build steps",
                "external-doc-url": "https://www.flatcar.org/docs/latest/",
            },
        ],
    }
