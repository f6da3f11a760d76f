"""The ``flatcar_release`` DAG: a tested build of a release branch, published by ``release_build``.

:mod:`.dag` builds the DAG at parse time (no I/O); :mod:`.checks` decides, on a worker and before any side
effect, whether a version may be released (the builds index and manifest say its tests passed, its
artifacts are in the cache); :mod:`.record` writes what was published into the build's manifests and
its builds index entry. docs/release.md.
"""

from .dag import RELEASE_DAG_ID, release_dag

__all__ = ["RELEASE_DAG_ID", "release_dag"]
