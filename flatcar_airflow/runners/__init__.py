"""Runners: where a step runs. Chosen by configuration, not code (:func:`make_runner`).

``{"type": "local", "root": "/var/lib/flatcar-airflow"}``
    a subprocess on the Airflow worker;
``{"type": "ssh", "ssh_conn_id": "flatcar_build_host", "root": "/var/lib/flatcar-airflow"}``
    a build host reached through an Airflow SSH connection;
``{"type": "docker", "image": "flatcar-airflow-runner:0.1.0", "docker_url": "unix:///var/run/docker.sock",
"root": "/var/lib/flatcar-airflow"}``
    a runner container on a Docker host, with the host's docker socket mounted.

Every kind takes ``pooled_worktrees`` (default true): a warm build host reuses a pooled work tree per
scripts repo and concurrent step, moved to the next tag incrementally (see ``flatcar-step.sh``), instead
of a fresh clone and checkout per step.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .base import Job, JobOutcome, Runner, RunnerError, job_key

__all__ = ["Job", "JobOutcome", "Runner", "RunnerError", "job_key", "make_runner", "validate_runner_config"]

_KEYS = {
    "local": {"type", "root", "pooled_worktrees"},
    "ssh": {"type", "root", "ssh_conn_id", "reconnect_timeout", "poll_interval", "pooled_worktrees"},
    "docker": {"type", "root", "image", "docker_url", "network_mode", "docker_conn_id", "pooled_worktrees"},
}
_REQUIRED = {"local": set(), "ssh": {"ssh_conn_id"}, "docker": {"image"}}


#: A runner's root directory: it reaches the build host's shell, docker mounts and ssh paths.
_ROOT = re.compile(r"/[A-Za-z0-9/._+@=,-]*")
#: A docker image reference: [registry[:port]/]name[:tag][@digest], lower-case path components.
_IMAGE = re.compile(
    r"[a-z0-9][a-z0-9._-]*(?::[0-9]+)?(?:/[a-z0-9][a-z0-9._-]*)*"  # [registry[:port]/]name
    r"(?::[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?(?:@sha256:[0-9a-f]{64})?"  # [:tag][@digest]
)


def validate_runner_config(config: Mapping | str) -> dict:
    """Normalize a runner configuration; a bad one raises ValueError naming the key and the problem."""
    if isinstance(config, str):
        config = {"type": config}
    if not isinstance(config, Mapping):
        raise ValueError(f"runner must be a mapping or one of {', '.join(_KEYS)}, got {config!r}")
    kind = config.get("type")
    if kind not in _KEYS:
        raise ValueError(f"runner.type {kind!r} is not one of {', '.join(_KEYS)}")
    unknown = set(config) - _KEYS[kind]
    if unknown:
        raise ValueError(f"runner: unknown key(s) for a {kind} runner: {', '.join(sorted(unknown))}")
    missing = _REQUIRED[kind] - set(config)
    if missing:
        raise ValueError(f"runner: a {kind} runner needs {', '.join(sorted(missing))}")
    root = config.get("root", "/var/lib/flatcar-airflow")
    if not isinstance(root, str) or not _ROOT.fullmatch(root) or ".." in root.split("/"):
        raise ValueError(
            f"runner.root {str(root)[:80]!r} must be an absolute path of letters, digits, '/', '.', '_', "
            "'+', '@', '=', ',' and '-', without '..'"
        )
    pooled = config.get("pooled_worktrees", True)
    if not isinstance(pooled, bool):
        raise ValueError(f"runner.pooled_worktrees must be true or false, got {pooled!r}")
    if kind == "docker":
        image = config.get("image")
        if not isinstance(image, str) or not _IMAGE.fullmatch(image):
            raise ValueError(
                f"runner.image {str(image)[:80]!r} must be a docker image reference (e.g. "
                "flatcar-airflow-runner:0.1.0 or registry.example.org/runner@sha256:…)"
            )
    return {**config, "root": root.rstrip("/") or "/"}


def make_runner(config: Mapping | str) -> Runner:
    config = validate_runner_config(config)
    kind = config["type"]
    if kind == "local":
        from .local import LocalRunner

        return LocalRunner(root=config["root"], pooled_worktrees=config.get("pooled_worktrees", True))
    if kind == "ssh":
        from .ssh import SSHRunner

        return SSHRunner(**{k: v for k, v in config.items() if k != "type"})
    from .docker import DockerRunner

    return DockerRunner(**{k: v for k, v in config.items() if k != "type"})
