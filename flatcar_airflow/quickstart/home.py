"""Where the quickstart keeps its state: one directory, ``$FLATCAR_AIRFLOW_HOME`` or
``~/.local/share/flatcar-airflow``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Home", "default_home"]


def default_home() -> Path:
    configured = os.environ.get("FLATCAR_AIRFLOW_HOME")
    if configured:
        return Path(configured).expanduser().absolute()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "flatcar-airflow"


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def airflow(self) -> Path:
        """AIRFLOW_HOME: airflow.cfg (its generated secrets), the SQLite database, task logs."""
        return self.root / "airflow"

    @property
    def buildcache(self) -> Path:
        return self.root / "buildcache"

    @property
    def demo_origin(self) -> Path:
        return self.root / "demo" / "scripts.git"

    @property
    def demo_config(self) -> Path:
        return self.root / "demo" / "flatcar.yaml"

    @property
    def build_root(self) -> Path:
        """The local runner's root: the build host's mirrors, work trees and job directories."""
        return self.root / "build-root"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def state_file(self) -> Path:
        """Ports and the processes of the running quickstart (read by ``stop`` and ``status``)."""
        return self.root / "quickstart.json"

    @property
    def lock_file(self) -> Path:
        return self.root / "quickstart.lock"

    @property
    def env_file(self) -> Path:
        """``source`` it to use the ``airflow`` command against this installation."""
        return self.root / "env.sh"

    @property
    def password_file(self) -> Path:
        return self.airflow / "simple_auth_manager_passwords.json.generated"

    def read_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def write_state(self, state: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.state_file)
