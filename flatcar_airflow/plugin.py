"""The Airflow plugin: the Flatcar builds page (a FastAPI app and its navigation entry) and the template
macros (``macros.flatcar``).

Registered through the ``airflow.plugins`` entry point (pyproject.toml); ``plugins/flatcar_builds.py`` is
the same plugin for deployments that use Airflow's plugins folder instead of installing the package's
entry points. Airflow loads plugins in every component (scheduler, workers, dag-processor), so this module
imports only the app's routes; what they need to answer a request is imported when a request comes.
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin

from .buildspage import PREFIX, UI_ROUTE
from .buildspage.app import app
from .macros import MACROS


class FlatcarPlugin(AirflowPlugin):
    """The builds page under ``/flatcar/`` and the "Flatcar builds" entry in the UI's Browse menu."""

    name = "flatcar"
    #: ``{{ macros.flatcar.<name>(...) }}`` in templates (flatcar_airflow/macros.py; a light import).
    macros = MACROS
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": app, "url_prefix": PREFIX, "name": "Flatcar builds"}
    ]
    external_views: ClassVar[list[dict[str, Any]]] = [
        {
            "name": "Flatcar builds",
            "href": f"{PREFIX}/",
            "url_route": UI_ROUTE,
            "destination": "nav",
            "category": "browse",
        },
        {
            # On a DAG run's page: the build this run made (redirects to its build page).
            "name": "Flatcar build",
            "href": f"{PREFIX}/runs/{{DAG_ID}}/{{RUN_ID}}",
            "destination": "dag_run",
        },
    ]
