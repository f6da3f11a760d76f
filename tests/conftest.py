"""Test session setup: Airflow and the tagging cache live in throw-away directories.

Airflow reads its configuration at import time, so the environment is set before anything imports it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ["airflow_env", "images", "infra", "connections"]

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="flatcar-airflow-tests-"))
os.environ.setdefault("AIRFLOW_HOME", str(_SESSION_DIR / "airflow"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
os.environ["FLATCAR_AIRFLOW_CACHE"] = str(_SESSION_DIR / "cache")
for _var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
    os.environ.pop(_var, None)


@pytest.fixture
def origins(tmp_path):
    from gitrepos import make_origins

    return make_origins(tmp_path / "origins", "in-tree")


@pytest.fixture
def seed_origins(tmp_path):
    from gitrepos import make_origins

    return make_origins(tmp_path / "seed-origins", "submodules")


@pytest.fixture
def repo_for(tmp_path):
    """A ScriptsRepo on an origin with a cache private to the test."""
    from flatcar_airflow.scripts_repo import ScriptsRepo

    def _make(origins, cache: str = "cache"):
        return ScriptsRepo(origins.url, cache_dir=tmp_path / cache)

    return _make
