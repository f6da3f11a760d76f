"""The demo profile: a scripts origin made from the miniature repository and the images it needs.

The miniature scripts repository (``examples/mini-scripts``, docs/mini-scripts.md) keeps the real
interface at a tiny size, so a demo build runs in about a minute with no internet. The quickstart and the
tests use the same code: :func:`make_demo_origin` (a bare origin with ``main`` and ``flatcar-4593``) and
:func:`make_demo_images` (the seed SDK and the mantle image, made from a busybox root file system, since
no registry is needed or reachable).
"""

from __future__ import annotations

from .images import SEED_IMAGE, SEED_VERSION, import_image, make_demo_images, mantle_image, sdk_files
from .origin import BRANCH_VERSIONFILE, MAIN_VERSIONFILE, VERSIONFILE, find_mini_scripts, make_demo_origin

__all__ = [
    "BRANCH_VERSIONFILE",
    "MAIN_VERSIONFILE",
    "SEED_IMAGE",
    "SEED_VERSION",
    "VERSIONFILE",
    "find_mini_scripts",
    "import_image",
    "make_demo_images",
    "make_demo_origin",
    "mantle_image",
    "sdk_files",
]
