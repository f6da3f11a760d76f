"""Who may see the builds page: Airflow's own login and its permission to read DAG runs.

INPUTS:  the request's ``Authorization: Bearer`` token or the UI's ``_token`` cookie (the same login as the
         rest of the UI, resolved by Airflow's ``get_user``); the auth manager's ``is_authorized_dag``.
OUTPUTS: the user, or :class:`NotLoggedIn`; the subset of DAG ids whose runs the user may read.

Why not a FastAPI ``Depends(get_user)`` at import time: Airflow loads plugins in every component, and the
api-server's security module pulls in its models and database layer; it is imported on the first request.
Airflow mounts a plugin's app without any authentication, so every route of the app asks for the user
itself (:func:`user_or_none`), and a page without one answers 401 or a redirect with no build data.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import Request

__all__ = ["NotLoggedIn", "login_url", "readable_dag_ids", "user_or_none"]


class NotLoggedIn(Exception):
    """No valid Airflow login came with the request."""


async def user_or_none(request: Request) -> Any | None:
    """The logged-in Airflow user of the request, None without a valid token (expired, forged, none)."""
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi import HTTPException
    from fastapi.security import HTTPAuthorizationCredentials

    credentials = None
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=token.strip())
    try:
        return await get_user(request, None, credentials)
    except HTTPException:
        return None


def readable_dag_ids(user: Any, dag_ids: Iterable[str | None]) -> set[str | None]:
    """The DAG ids (None: a build that names no DAG) whose runs ``user`` may read (GET on DAG runs)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    manager = get_auth_manager()
    allowed: set[str | None] = set()
    for dag_id in set(dag_ids):
        if manager.is_authorized_dag(
            method="GET", access_entity=DagAccessEntity.RUN, details=DagDetails(id=dag_id), user=user
        ):
            allowed.add(dag_id)
    return allowed


def login_url(next_url: str) -> str:
    """Airflow's login page, coming back to ``next_url`` afterwards."""
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager().get_url_login(next_url=next_url)
