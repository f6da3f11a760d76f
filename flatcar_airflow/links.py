"""Operator extra links of the step tasks: the step's directory in the build cache, the version tag in the
scripts repository's web view.

Why XCom: a link needs the run's version (the tag task's result), which only the running task knows, and
the cache's HTTPS address, which is in a connection only workers read. So, as Airflow's own providers do,
the step operator works the URLs out in ``execute`` (:func:`persist_step_links`) and stores them in XCom;
``get_link`` reads them back by ``ti_key``. Airflow 3 calls ``get_link`` on the worker when the task
finishes and keeps its answer as XCom ``_link_<class name>``, which the api-server shows without
importing this module (the classes are also listed in the provider info's ``extra-links``).

INPUTS:  the step (name, :class:`~flatcar_airflow.steps.BuildContext`, options), the build cache
         connection's ``http_url``, the configuration's ``web.tag_url`` template and ``scripts_repo``.
OUTPUTS: XCom ``flatcar_cache_url`` and ``flatcar_tag_url`` of the step task (https URLs or nothing).
         Neither ever holds a secret or an ssh address: user info is dropped from every URL, and the
         cache link is the HTTPS read side only.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from airflow.sdk import BaseOperatorLink

from .artifacts import container, image_file

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

    from .config import Web
    from .steps import BuildContext

__all__ = ["BuildCacheLink", "VersionTagLink", "cache_directory", "persist_step_links", "public_url"]


def public_url(url: str | None) -> str | None:
    """``url`` if it is an http(s) URL, without any user info (``https://token@host/x`` -> ``https://host/x``);
    None for anything else (an ssh or file address is never a link)."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def cache_directory(step: str, ctx: BuildContext, options: Mapping[str, Any]) -> str:
    """The build cache directory (relative, ending in ``/``) where ``step`` puts its artifacts.

    The directory of the step's first declared output (sdk_bootstrap: ``sdk/amd64/<SDKVER>/``,
    sdk_container: ``containers/<SDK DV>/``, packages: ``containers/<DV>/``, push_packages:
    ``boards/<arch>-usr/<VER>/pkgs/``, image: ``images/<arch>/<VER>/``, test:
    ``testing/<VER>/<arch>/<vendor>/``); else the arch's images directory (vms, image_changes), else the
    SDK's containers directory (packages_tag, which writes nothing: the SDK the OS build builds with).
    """
    from .steps import STEPS

    outputs = STEPS[step].outputs(ctx, options)
    if outputs:
        return posixpath.dirname(outputs[0].path) + "/"
    if ctx.arch:
        return image_file(ctx.os, ctx.arch, "").path
    return posixpath.dirname(container("flatcar-sdk-all", ctx.sdk).path) + "/"


def persist_step_links(
    context: Mapping[str, Any],
    *,
    step: str,
    ctx: BuildContext,
    options: Mapping[str, Any],
    cache_base_url: str,
    web: Web,
    scripts_repo: str,
) -> dict[str, str | None]:
    """Work out a step task's link URLs and store them in its XCom; returns them."""
    base = public_url(cache_base_url)
    cache = f"{base.rstrip('/')}/{cache_directory(step, ctx, options)}" if base else None
    tag = public_url(web.link("tag_url", scripts_repo, tag=ctx.tag.tag))
    BuildCacheLink.persist(context, cache)
    VersionTagLink.persist(context, tag)
    return {"cache": cache, "tag": tag}


class _XComLink(BaseOperatorLink):
    """A link whose URL the task stored in its XCom under :attr:`key`."""

    key: ClassVar[str] = ""

    @classmethod
    def persist(cls, context: Mapping[str, Any], url: str | None) -> None:
        context["ti"].xcom_push(key=cls.key, value=url)

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return XCom.get_value(ti_key=ti_key, key=self.key) or ""


class BuildCacheLink(_XComLink):
    """The step's artifacts directory in the build cache (HTTPS), e.g. ``https://cache/images/amd64/<VER>/``."""

    name = "Build cache"
    key = "flatcar_cache_url"


class VersionTagLink(_XComLink):
    """The version tag in the scripts repository's web view (``web.tag_url``); empty when that is off."""

    name = "Version tag"
    key = "flatcar_tag_url"
