"""Container images for the tests, made locally (no registry is reachable from the test machines).

``runner_image`` builds ``docker/runner/Dockerfile`` on a Debian base image that debootstrap makes from
Debian's package archive (once per machine: both images are kept and reused while the Dockerfile is
unchanged).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASE = "flatcar-airflow-test/debian:bookworm"
RUNNER = "flatcar-airflow-runner:test"


def _image_label(image: str, label: str) -> str | None:
    proc = subprocess.run(
        ["docker", "image", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}', image],
        capture_output=True,
        text=True,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def _ensure_base() -> None:
    if _image_label(BASE, "x") is not None:
        return
    rootfs = Path(tempfile.mkdtemp(prefix="flatcar-airflow-rootfs-"))
    try:
        subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(rootfs)],
            check=True,
            capture_output=True,
            timeout=900,
        )
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", BASE], stdin=tar.stdout, check=True, capture_output=True)
        tar.wait()
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


@pytest.fixture(scope="session")
def runner_image(docker_engine) -> str:
    context = ROOT / "docker" / "runner"
    digest = hashlib.sha256((context / "Dockerfile").read_bytes()).hexdigest()[:16]
    if _image_label(RUNNER, "io.flatcar-airflow.dockerfile") == digest:
        return RUNNER
    _ensure_base()
    subprocess.run(
        [
            "docker",
            "build",
            "-q",
            "--network",
            "host",
            "--build-arg",
            f"BASE={BASE}",
            "--label",
            f"io.flatcar-airflow.dockerfile={digest}",
            "-t",
            RUNNER,
            str(context),
        ],
        check=True,
        capture_output=True,
        timeout=1200,
    )
    return RUNNER
