"""Images the demo builds need, made locally: the seed SDK and the mantle image.

A real build pulls ``ghcr.io/flatcar/flatcar-sdk-all:<seed>`` (or loads it from the build cache) and the
mantle image named in ``sdk_container/.repo/manifests/mantle-container``. The miniature scripts only need
a shell and a few files in them, so the demo makes both from a static busybox root file system with
``docker import`` (no registry is contacted). The names are the real ones: the demo's tags never leave
this Docker host.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from .origin import find_mini_scripts

__all__ = ["SEED_IMAGE", "SEED_VERSION", "import_image", "make_demo_images", "mantle_image", "sdk_files"]

#: The seed SDK of the demo's first full build (main's version.txt SDK) and its image.
SEED_VERSION = "4798.0.0+nightly-20260820-2100"
SEED_IMAGE = f"ghcr.io/flatcar/flatcar-sdk-all:{SEED_VERSION.replace('+', '-')}"
_DIRS = ("bin", "sbin", "etc", "tmp", "root", "home", "var/tmp", "usr/bin", "usr/share", "proc", "sys", "dev")


def mantle_image(mini_scripts: Path | None = None) -> str:
    manifest = (mini_scripts or find_mini_scripts()) / "sdk_container/.repo/manifests/mantle-container"
    return manifest.read_text().strip()


def sdk_files(version: str, boards: tuple[str, ...] = ("amd64-usr", "arm64-usr")) -> dict[str, str]:
    """The files that make a busybox root file system an SDK of ``version`` for the miniature scripts."""
    files = {
        "/etc/flatcar-sdk-version": f"{version}\n",
        "/etc/lsb-release": f'DISTRIB_ID="Flatcar Container Linux by Kinvolk"\nDISTRIB_RELEASE={version}\n',
    }
    for board in boards:
        files[f"/build/{board}/etc/target-version.txt"] = f"TARGET_FLATCAR_VERSION='{version}'\n"
    return files


def busybox_rootfs(dest: Path) -> Path:
    """A minimal root file system: static busybox with all its applets in /bin, and /etc, /tmp, /root."""
    busybox = shutil.which("busybox") or "/usr/bin/busybox"
    if not Path(busybox).exists():
        raise FileNotFoundError("busybox is not installed (Debian package busybox-static)")
    for sub in _DIRS:
        (dest / sub).mkdir(parents=True, exist_ok=True)
    (dest / "tmp").chmod(0o1777)
    (dest / "var/tmp").chmod(0o1777)
    shutil.copy2(busybox, dest / "bin/busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        link = dest / "bin" / applet
        if not link.exists() and applet != "busybox":
            link.symlink_to("busybox")
    (dest / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nsdk:x:1000:1000:sdk:/home/sdk:/bin/sh\n")
    (dest / "etc/group").write_text("root:x:0:\nsdk:x:1000:\n")
    (dest / "etc/os-release").write_text('NAME="flatcar-airflow demo rootfs"\nID=busybox\n')
    return dest


def import_image(rootfs: Path, image: str, files: dict[str, str | bytes] | None = None) -> str:
    """``docker import`` a root file system plus extra ``files`` (image path → content) as ``image``."""
    buffer = io.BytesIO()
    added: set[str] = set()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(rootfs, arcname=".")
        for path, content in (files or {}).items():
            data = content.encode() if isinstance(content, str) else content
            parts = Path(path.lstrip("/")).parts
            for depth in range(1, len(parts)):
                directory = "/".join(parts[:depth])
                if not (rootfs / directory).exists() and directory not in added:
                    added.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
            info = tarfile.TarInfo("/".join(parts))
            info.size = len(data)
            info.mode = 0o644
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    proc = subprocess.run(
        ["docker", "import", "-", image], input=buffer.getvalue(), capture_output=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"docker import {image} failed: {proc.stderr.decode(errors='replace').strip()}")
    return image


def _image_exists(image: str) -> bool:
    proc = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    return proc.returncode == 0


def make_demo_images(mini_scripts: Path | None = None, *, force: bool = False) -> list[str]:
    """The seed SDK and mantle images of the demo (made only if missing, unless ``force``)."""
    wanted = {
        SEED_IMAGE: sdk_files(SEED_VERSION),
        mantle_image(mini_scripts): {
            "/etc/mantle-version": mantle_image(mini_scripts).rpartition(":")[2] + "\n"
        },
    }
    made = []
    with tempfile.TemporaryDirectory(prefix="flatcar-demo-rootfs-") as tmp:
        rootfs = None
        for image, files in wanted.items():
            if not force and _image_exists(image):
                continue
            rootfs = rootfs or busybox_rootfs(Path(tmp))
            made.append(import_image(rootfs, image, files))
    return made
