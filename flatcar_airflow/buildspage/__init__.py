"""The Flatcar builds page: builds by branch and channel, a build's own page, trends, a JSON API, badges.

An Airflow plugin's FastAPI app (:mod:`flatcar_airflow.plugin`) mounted at :data:`PREFIX` on the
api-server, behind Airflow's own login. docs/builds-page.md says what each page shows.

INPUTS:  the builds index of each branch and the build manifests, read over HTTPS from the build cache
         (flatcar-airflow/builds/<branch>.json, images/<arch>/<VER>/flatcar-airflow-manifest.json); the
         configuration (branches, link templates, paging); the caller's Airflow login.
OUTPUTS: HTML pages, JSON, SVG charts and badges. Nothing is written anywhere.

Modules: :mod:`.app` (routes), :mod:`.access` (Airflow login and DAG run permissions), :mod:`.source`
(indexes and manifests from the cache, cached in memory), :mod:`.views` (what a page shows, pure),
:mod:`.svg` (charts and badges, pure), ``templates/`` (Jinja2).
"""

PREFIX = "/flatcar"
UI_ROUTE = "flatcar-builds"
