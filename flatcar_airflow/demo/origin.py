"""A bare scripts origin made from the miniature scripts repository.

``main`` carries version.txt of the full nightly 4798.0.0+nightly-20260820-2100 (tagged
``main-4798.0.0-nightly-20260820-2100``); ``flatcar-4593`` carries OS 4593.2.4 on SDK 4593.0.0 (release
tag ``stable-4593.2.4``), the parent of main's commit.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["BRANCH_VERSIONFILE", "MAIN_VERSIONFILE", "VERSIONFILE", "find_mini_scripts", "make_demo_origin"]

VERSIONFILE = "sdk_container/.repo/manifests/version.txt"
MAIN_VERSIONFILE = (
    "FLATCAR_VERSION=4798.0.0+nightly-20260820-2100\n"
    "FLATCAR_VERSION_ID=4798.0.0\n"
    'FLATCAR_BUILD_ID="nightly-20260820-2100"\n'
    "FLATCAR_SDK_VERSION=4798.0.0+nightly-20260820-2100\n"
)
BRANCH_VERSIONFILE = (
    "FLATCAR_VERSION=4593.2.4\n"
    "FLATCAR_VERSION_ID=4593.2.4\n"
    'FLATCAR_BUILD_ID=""\n'
    "FLATCAR_SDK_VERSION=4593.0.0\n"
)
#: When main's nightly was built.
MAIN_NIGHTLY_AT = dt.datetime(2026, 8, 20, 21, 0, tzinfo=dt.UTC)


def find_mini_scripts(start: Path | None = None) -> Path:
    """``examples/mini-scripts`` of the checkout this package runs from (the demo needs a checkout)."""
    here = (start or Path(__file__)).resolve()
    for parent in here.parents:
        candidate = parent / "examples" / "mini-scripts"
        if (candidate / "ci-automation").is_dir():
            return candidate
    raise FileNotFoundError(
        "examples/mini-scripts not found: the demo runs from a checkout of flatcar-airflow (give --config "
        "FILE for a real configuration)"
    )


def _git(*args: str, cwd: Path | None = None, date: dt.datetime | None = None) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "flatcar-airflow demo",
        "GIT_AUTHOR_EMAIL": "demo@flatcar-airflow.invalid",
        "GIT_COMMITTER_NAME": "flatcar-airflow demo",
        "GIT_COMMITTER_EMAIL": "demo@flatcar-airflow.invalid",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        env.pop(name, None)
    if date is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = date.strftime("%Y-%m-%dT%H:%M:%S+0000")
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.strip()


def make_demo_origin(dest: Path, mini_scripts: Path | None = None) -> Path:
    """Create the bare origin at ``dest`` (which must not exist) from the miniature scripts repository.

    Built beside ``dest`` and renamed into place, so an interrupted run leaves no half-made origin.
    """
    mini_scripts = mini_scripts or find_mini_scripts()
    if dest.exists():
        raise FileExistsError(f"{dest} exists already")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".demo-origin-", dir=dest.parent) as tmp:
        bare, work = Path(tmp) / "scripts.git", Path(tmp) / "work"
        _git("init", "-q", "--bare", "-b", "main", str(bare))
        _git("clone", "-q", str(bare), str(work))
        _git("checkout", "-q", "-b", "main", cwd=work)
        shutil.copytree(mini_scripts, work, symlinks=True, dirs_exist_ok=True)
        (work / VERSIONFILE).write_text(BRANCH_VERSIONFILE)
        _git("add", "-A", cwd=work)
        released = MAIN_NIGHTLY_AT - dt.timedelta(days=3)
        _git("commit", "-q", "-m", "New version: stable-4593.2.4", cwd=work, date=released)
        _git("tag", "stable-4593.2.4", cwd=work)
        _git("branch", "flatcar-4593", cwd=work)
        (work / VERSIONFILE).write_text(MAIN_VERSIONFILE)
        _git("add", VERSIONFILE, cwd=work)
        nightly = "main-4798.0.0-nightly-20260820-2100"
        _git("commit", "-q", "-m", f"New version: {nightly}", cwd=work, date=MAIN_NIGHTLY_AT)
        _git("tag", nightly, cwd=work)
        _git("push", "-q", "origin", "main", "flatcar-4593", "--tags", cwd=work)
        bare.rename(dest)
    return dest
