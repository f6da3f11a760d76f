"""Routes of the builds page: HTML pages, the JSON API (with its OpenAPI schema), badges.

INPUTS:  requests with an Airflow login (:mod:`.access`); indexes and manifests from the build cache
         (:mod:`.source`); the configuration (``FLATCAR_AIRFLOW_CONFIG``).
OUTPUTS: ``/flatcar/`` (builds by branch and channel), ``/flatcar/builds/<tag>`` (one build),
         ``/flatcar/branches/<branch>`` (its charts), ``/flatcar/runs/<dag>/<run>`` (to a run's build),
         ``/flatcar/badge/<branch>.svg``, ``/flatcar/api/builds``, ``/flatcar/api/builds/<tag>``,
         ``/flatcar/api/branches``, ``/flatcar/openapi.json``.

Every route asks for the login first and answers without any build data when there is none: 401 for the
API and the badge (unless ``web.public_badge``), a redirect to Airflow's login page for a page. Builds of
DAGs whose runs the user may not read are left out as if they did not exist. The reads from the cache are
blocking, so they run in the thread pool, not on the api-server's event loop.
"""

from __future__ import annotations

import re
import time
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

__all__ = ["app"]

_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
_TEMPLATES = Path(__file__).with_name("templates")

app = FastAPI(
    title="Flatcar builds",
    version="1",
    summary="Builds of Flatcar Container Linux: versions, states per step and arch, tests, artifacts.",
    description=(
        "The builds index of every branch (docs/builds-index.md), with links. Every endpoint needs an "
        "Airflow login: `Authorization: Bearer <token>` (`POST /auth/token`) or the UI's cookie. "
        "Example: the newest successful stable nightly is "
        "`GET /flatcar/api/builds?channel=stable&state=success&run_type=scheduled&limit=1`."
    ),
    docs_url=None,
    redoc_url=None,
    openapi_url="/openapi.json",
)


@app.middleware("http")
async def _server_timing(request: Request, call_next):
    """``Server-Timing: app;dur=<ms>`` on every answer: what the page costs the api-server."""
    started = time.perf_counter()
    response = await call_next(request)
    response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


# -- plumbing --


class _Context:
    """What a request needs: the configuration, the data source, the links and the user's DAGs."""

    def __init__(self, request: Request, user: Any) -> None:
        from ..config import load_config
        from .views import Links

        self.config = load_config()
        self.source = _source(self.config)
        app_root = (request.scope.get("root_path") or "").rstrip("/")
        from . import PREFIX

        ui_root = app_root[: -len(PREFIX)] if app_root.endswith(PREFIX) else ""
        self.links = Links(
            ui_root=ui_root,
            app_root=app_root,
            cache_url=self.source.cache_url,
            web_link=lambda what, **fields: self.config.web.link(what, self.config.scripts_repo, **fields),
        )
        self.user = user

    def builds(self):
        """Every build the user may see, newest first."""
        from .access import readable_dag_ids

        builds = self.source.builds()
        allowed = readable_dag_ids(self.user, {entry.get("dag_id") for entry in builds.entries})
        builds.entries = [entry for entry in builds.entries if entry.get("dag_id") in allowed]
        return builds


_SOURCES: dict[int, tuple[Any, Any]] = {}


def _source(config):
    """One data source (and its in-memory cache) per configuration: a changed file gets a new one."""
    from .source import Source

    key = id(config)
    if key not in _SOURCES or _SOURCES[key][0] is not config:
        for _, old in _SOURCES.values():
            old.close()
        _SOURCES.clear()
        _SOURCES[key] = (config, Source(config))
    return _SOURCES[key][1]


@lru_cache(maxsize=1)
def _templates():
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment


def _render(name: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    return HTMLResponse(_templates().get_template(name).render(**values), status_code=status_code)


async def _context(request: Request, *, page: bool) -> _Context:
    """The request's context, or the refusal: a redirect to the login page for a page, else 401."""
    from .access import login_url, user_or_none

    user = await user_or_none(request)
    if user is None:
        if page:
            next_url = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise _Redirect(login_url(next_url))
        raise HTTPException(401, "Not authenticated: log in to Airflow (the UI, or a token from /auth/token)")
    return await _threaded(_Context, request, user)


class _Redirect(Exception):
    def __init__(self, url: str) -> None:
        self.url = url


@app.exception_handler(_Redirect)
async def _redirect(request: Request, exc: _Redirect):
    return RedirectResponse(exc.url, status_code=303)


def _unreadable(exc: Exception, page: bool):
    message = f"The build cache cannot be read: {exc}"
    if page:
        return _render("error.html", 502, title="Build cache unreadable", message=message, app_root="")
    return JSONResponse({"detail": message}, status_code=502)


def _check_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise HTTPException(
            422, f"tag {tag[:80]!r} is not a version tag (letters, digits, '.', '_', '+', '-')"
        )
    return tag


def _check_branch(branch: str) -> str:
    from ..buildindex.entries import index_file_name

    try:
        index_file_name(branch)
    except ValueError as err:
        raise HTTPException(422, f"branch: {err}") from None
    return branch


def _choice(name: str, value: str | None) -> str | None:
    """A filter of the page: empty is none; anything but its values is a 422 naming it."""
    from .views import FILTERS

    if not value:
        return None
    if value not in FILTERS[name]:
        raise HTTPException(422, f"{name}: {value[:40]!r} is not one of {', '.join(FILTERS[name])}")
    return value


StateFilter = Literal["success", "failed"]
RunTypeFilter = Literal["scheduled", "manual", "backfill"]


async def _threaded(function, *args, **kwargs):
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(function, *args, **kwargs)


# -- pages --


@app.get("/", response_class=HTMLResponse, include_in_schema=False)
async def builds_page(
    request: Request,
    branch: Annotated[str | None, Query(max_length=200)] = None,
    state: Annotated[str | None, Query(max_length=20)] = None,
    run_type: Annotated[str | None, Query(max_length=20)] = None,
    page: Annotated[int, Query(ge=1, le=100000)] = 1,
):
    """Builds grouped by branch and channel, newest first, filtered and paginated.

    The filter form sends its "all" choices as empty values: an empty filter is no filter.
    """
    if branch:
        _check_branch(branch)
    state = _choice("state", state)
    run_type = _choice("run_type", run_type)
    ctx = await _context(request, page=True)
    return await _threaded(_builds_page, ctx, branch or None, state, run_type, page)


def _builds_page(ctx: _Context, branch, state, run_type, page):
    from .source import CacheUnreadable
    from .views import filter_entries, group_rows, list_row, paginate

    try:
        builds = ctx.builds()
    except CacheUnreadable as err:
        return _unreadable(err, page=True)
    chosen = filter_entries(builds.entries, branch=branch, state=state, run_type=run_type)
    shown, page, pages = paginate(chosen, page, ctx.config.web.page_size)
    filters = {"branch": branch, "state": state, "run_type": run_type}
    return _render(
        "builds.html",
        title="Flatcar builds",
        app_root=ctx.links.app_root,
        groups=group_rows(list_row(entry, ctx.links) for entry in shown),
        branches=builds.branches,
        filters=filters,
        total=len(chosen),
        page=page,
        pages=pages,
        prev_url=ctx.links.listing(**filters, page=page - 1) if page > 1 else None,
        next_url=ctx.links.listing(**filters, page=page + 1) if page < pages else None,
        problems=builds.problems,
        branch_url=ctx.links.branch,
    )


@app.get("/builds/{tag}", response_class=HTMLResponse, include_in_schema=False)
async def build_page(request: Request, tag: Annotated[str, PathParam(max_length=200)]):
    """One build: its manifest rendered, and what changed since the branch's previous build."""
    _check_tag(tag)
    ctx = await _context(request, page=True)
    return await _threaded(_build_page, ctx, tag)


def _detail(ctx: _Context, tag: str, reports: bool):
    from .views import artifact_paths, build_detail

    builds = ctx.builds()
    entry = builds.by_tag(tag)
    if entry is None:
        return None, None
    previous = builds.previous(entry)
    manifest = ctx.source.manifest(entry)
    previous_manifest = ctx.source.manifest(previous) if previous else None
    texts, digests = {}, {}
    if reports and manifest:
        texts = _reports(ctx, manifest)
        digests = ctx.source.digests(artifact_paths(manifest))
    detail = build_detail(entry, manifest, previous, previous_manifest, ctx.links, texts, digests)
    return detail, manifest


def _reports(ctx: _Context, manifest: dict) -> dict[str, str]:
    """The image changes report of each arch (an artifact of kind ``report`` of ``image_changes``)."""
    found = {}
    for arch, records in (manifest.get("arches") or {}).items():
        record = (records or {}).get("image_changes") or {}
        for artifact in record.get("artifacts") or []:
            if isinstance(artifact, dict) and artifact.get("kind") == "report" and artifact.get("path"):
                text = ctx.source.text(artifact["path"])
                if text is not None:
                    found[arch] = text
    return found


def _build_page(ctx: _Context, tag: str):
    from .source import CacheUnreadable

    try:
        detail, _ = _detail(ctx, tag, reports=True)
    except CacheUnreadable as err:
        return _unreadable(err, page=True)
    if detail is None:
        return _render(
            "error.html",
            404,
            title="No such build",
            message=f"No build {tag} in the builds index of any branch you may read.",
            app_root=ctx.links.app_root,
        )
    return _render("build.html", title=tag, app_root=ctx.links.app_root, build=detail, links=ctx.links)


@app.get("/gc", response_class=HTMLResponse, include_in_schema=False)
async def gc_page(request: Request):
    """The last garbage collection's report (docs/retention.md), for users who may read its DAG."""
    ctx = await _context(request, page=True)
    return await _threaded(_gc_page, ctx)


def _gc_page(ctx: _Context):
    import json

    from ..retention.collector import REPORT_PATH
    from ..retention.dag import GC_DAG_ID
    from .access import readable_dag_ids
    from .source import CacheUnreadable

    if GC_DAG_ID not in readable_dag_ids(ctx.user, {GC_DAG_ID}):
        return _render(
            "error.html", 403, title="Not allowed", message=f"You may not read {GC_DAG_ID}.", app_root=""
        )
    try:
        text = ctx.source.text(REPORT_PATH)
    except CacheUnreadable as err:
        return _unreadable(err, page=True)
    try:
        report = json.loads(text) if text else None
    except ValueError:
        report = None
    return _render(
        "gc.html",
        title="Build cache garbage collection",
        app_root=ctx.links.app_root,
        report=report if isinstance(report, dict) else None,
        report_url=ctx.source.cache_url(REPORT_PATH),
    )


@app.get("/branches/{branch:path}", response_class=HTMLResponse, include_in_schema=False)
async def branch_page(request: Request, branch: str):
    """A branch's charts: each step's duration over its last builds, and the nightlies' success."""
    _check_branch(branch)
    ctx = await _context(request, page=True)
    return await _threaded(_branch_page, ctx, branch)


def _branch_page(ctx: _Context, branch: str):
    from .source import CacheUnreadable
    from .svg import duration_chart, success_chart
    from .views import filter_entries, trends

    try:
        builds = ctx.builds()
    except CacheUnreadable as err:
        return _unreadable(err, page=True)
    entries = filter_entries(builds.entries, branch=branch)
    data = trends(entries, ctx.config.web.chart_builds)
    from markupsafe import Markup

    return _render(
        "branch.html",
        title=f"Flatcar builds of {branch}",
        app_root=ctx.links.app_root,
        branch=branch,
        builds=len(data["tags"]),
        nightly_rate=data["nightly_rate"],
        nightly_count=data["nightly_count"],
        durations=Markup(duration_chart(data["tags"], data["series"])),  # noqa: S704 - escaped in svg.py
        success=Markup(success_chart(data["states"])),  # noqa: S704 - escaped in svg.py
        listing=ctx.links.listing(branch=branch),
    )


@app.get("/runs/{dag_id}/{run_id:path}", include_in_schema=False)
async def run_page(request: Request, dag_id: str, run_id: str):
    """From a DAG run (the "Flatcar build" link on a run's page) to the build it made."""
    ctx = await _context(request, page=True)
    builds = await _threaded(ctx.builds)
    for entry in builds.entries:
        if entry.get("dag_id") == dag_id and entry.get("run_id") == run_id:
            return RedirectResponse(ctx.links.build(entry["version_tag"]), status_code=303)
    return _render(
        "error.html",
        404,
        title="No build for this run",
        message=(
            f"The run {run_id} of {dag_id} has no build in the builds index: it is still running, or it "
            "stopped before its tag task (no version), or the nightly shortcut skipped it."
        ),
        app_root=ctx.links.app_root,
    )


@app.get(
    "/badge/{branch:path}",
    responses={200: {"content": {"image/svg+xml": {}}}},
    response_class=Response,
    summary="A branch's status badge (SVG): the state of its newest build",
)
async def branch_badge(request: Request, branch: str):
    if not branch.endswith(".svg"):
        raise HTTPException(404, "badges are /flatcar/badge/<branch>.svg")
    branch = _check_branch(branch.removesuffix(".svg"))
    from ..config import load_config

    config = load_config()
    if config.web.public_badge:
        from .source import CacheUnreadable

        source = _source(config)
        try:
            entries, _ = await _threaded(source.index, branch)
        except CacheUnreadable:
            entries = []
    else:
        ctx = await _context(request, page=False)
        builds = await _threaded(ctx.builds)
        entries = [entry for entry in builds.entries if entry.get("branch") == branch]
    from .svg import STATE_COLOURS, badge

    newest = entries[0] if entries else None
    if newest is None:
        svg = badge(branch, "no builds", "#9f9f9f")
    else:
        state = newest.get("state") or "unknown"
        words = {"success": "passing", "failed": "failing"}.get(state, state)
        svg = badge(
            branch, f"{words} {newest.get('version') or ''}".strip(), STATE_COLOURS.get(state, "#9f9f9f")
        )
    return Response(svg, media_type="image/svg+xml")


# -- JSON API --


@app.get("/api/branches", summary="The branches with their newest build")
async def api_branches(request: Request) -> dict[str, Any]:
    ctx = await _context(request, page=False)
    return await _threaded(_api_branches, ctx)


def _api_branches(ctx: _Context):
    from .source import CacheUnreadable
    from .views import api_entry, filter_entries

    try:
        builds = ctx.builds()
    except CacheUnreadable as err:
        return _unreadable(err, page=False)
    result = []
    for branch in builds.branches:
        entries = filter_entries(builds.entries, branch=branch)
        result.append(
            {
                "branch": branch,
                "builds": len(entries),
                "newest": api_entry(entries[0], ctx.links) if entries else None,
            }
        )
    return {"branches": result, "problems": builds.problems}


@app.get("/api/builds", summary="Builds, newest first, filtered")
async def api_builds(
    request: Request,
    branch: Annotated[str | None, Query(max_length=200)] = None,
    state: StateFilter | None = None,
    run_type: RunTypeFilter | None = None,
    channel: Annotated[str | None, Query(pattern=r"^[a-z]+$", max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Index entries (docs/builds-index.md) with ``links``; ``total`` counts every match."""
    if branch:
        _check_branch(branch)
    ctx = await _context(request, page=False)
    return await _threaded(_api_builds, ctx, branch, state, run_type, channel, limit, offset)


def _api_builds(ctx: _Context, branch, state, run_type, channel, limit, offset):
    from .source import CacheUnreadable
    from .views import api_entry, filter_entries

    try:
        builds = ctx.builds()
    except CacheUnreadable as err:
        return _unreadable(err, page=False)
    chosen = filter_entries(builds.entries, branch=branch, state=state, run_type=run_type, channel=channel)
    return {
        "builds": [api_entry(entry, ctx.links) for entry in chosen[offset : offset + limit]],
        "total": len(chosen),
        "problems": builds.problems,
    }


@app.get("/api/builds/{tag}", summary="One build: its index entry, its manifest, the previous build's tag")
async def api_build(request: Request, tag: Annotated[str, PathParam(max_length=200)]) -> dict[str, Any]:
    _check_tag(tag)
    ctx = await _context(request, page=False)
    return await _threaded(_api_build, ctx, tag)


def _api_build(ctx: _Context, tag: str):
    from .source import CacheUnreadable
    from .views import api_entry

    try:
        builds = ctx.builds()
        entry = builds.by_tag(tag)
        if entry is None:
            return JSONResponse({"detail": f"no build {tag} in the builds index"}, status_code=404)
        previous = builds.previous(entry)
        manifest = ctx.source.manifest(entry)
    except CacheUnreadable as err:
        return _unreadable(err, page=False)
    return {
        "build": api_entry(entry, ctx.links),
        "manifest": manifest,
        "previous": previous.get("version_tag") if previous else None,
    }
