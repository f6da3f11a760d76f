"""An auth manager with a restricted user, for the builds page's permission tests.

Airflow's SimpleAuthManager gives every role read access to every DAG, so it cannot show that the builds
page honours the auth manager's answer. This is a real auth manager (a deployment could configure one
like it as ``[core] auth_manager``): the simple one, except that its user ``mainonly`` may read the runs of
one DAG only.
"""

from __future__ import annotations

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

#: The one DAG whose runs the user ``mainonly`` may read.
ALLOWED_DAG = "flatcar_os_main"


class OneDagAuthManager(SimpleAuthManager):
    def is_authorized_dag(self, *, method, user, access_entity=None, details=None) -> bool:
        if user.get_name() == "mainonly" and (details is None or details.id != ALLOWED_DAG):
            return False
        return super().is_authorized_dag(
            method=method, user=user, access_entity=access_entity, details=details
        )
