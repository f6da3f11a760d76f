"""The builds index: one small JSON file per branch in the build cache, listing its builds newest first.

Release engineers think in versions ("what did last night's stable nightly produce, which arch failed");
the manifests answer that one build at a time, scattered over ``images/<arch>/<VER>/``. The index (the
idea of Fedora CoreOS's ``builds.json``) is what a builds page and a JSON API read instead.

INPUTS:  the build manifest the summary task has just written (``images/<arch>/<VER>/
         flatcar-airflow-manifest.json``), the current index over HTTPS; for a rebuild, every manifest in
         the cache (found through the cache's directory listings).
OUTPUTS: ``flatcar-airflow/builds/<branch>.json`` in the build cache (``/`` in a branch name becomes
         ``,``): schema version, branch, and up to 1000 entries, newest first, one per version tag.

Modules: :mod:`.entries` (the file's content: entries, merge, parse, render; pure functions),
:mod:`.store` (read, update, list, rebuild through the build cache hook), :mod:`.cli`
(``flatcar-airflow index rebuild``). The layout and the fields: docs/builds-index.md.
"""

from .entries import INDEX_DIR, MAX_ENTRIES, SCHEMA_VERSION, entry_from_manifest, index_path, merge

__all__ = ["INDEX_DIR", "MAX_ENTRIES", "SCHEMA_VERSION", "entry_from_manifest", "index_path", "merge"]
