"""Failure and recovery notices of builds, mailed through Airflow's SMTP notifier (docs/notifications.md).

Why the summary task: it is the one task that knows the whole build (its manifest: branch, version, the
state of every step on every arch) and, before it puts the build into the branch's builds index, what the
branch's previous build was. So the summary decides (:func:`previous_build` before the index update,
:func:`make_notice` after it) and keeps the decision in its XCom (key ``notice``); the mail goes out from
the summary task's own ``on_success_callback``/``on_failure_callback`` (:class:`BuildNotifier`, attached
only when ``notifications.smtp_conn_id`` is set). Task callbacks run in the worker in Airflow 3, after the
task's state is settled, and a callback that raises is only logged, so a notice can never change the
build's state; :class:`BuildNotifier` catches everything anyway and logs one warning line. A DAG-level
callback would run in the dag-processor, which needs the build cache connection and the SMTP connection
there and sees no task XCom of its own; the summary's callback has both where the build ran.

INPUTS:  the summary's manifest, the root failures (tasks in state ``failed``, not ``upstream_failed``),
         the run type, the branch's builds index (read once over HTTPS, only for a possible recovery), the
         configuration's ``notifications`` and ``web`` sections, Airflow's ``[api] base_url``.
OUTPUTS: XCom ``notice`` of the summary task (what was decided, JSON, no secret); one HTML mail per
         notice through ``SmtpNotifier`` and the ``smtp`` connection. The connection's password is only
         ever read by the SMTP hook (masked in logs by Airflow) and never written into a notice or a mail.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseNotifier

from .buildspage import PREFIX as BUILDS_PAGE_PREFIX  # the package's constants only, not its app

if TYPE_CHECKING:
    from .config import Config, Notifications
    from .hooks.buildcache import BuildCacheHook

__all__ = ["BuildNotifier", "build_page_url", "make_notice", "previous_build", "render_notice"]

log = logging.getLogger(__name__)

DEFAULT_AIRFLOW_URL = "http://localhost:8080"


def _wanted(settings: Notifications, run_type: str | None, event: str) -> bool:
    return bool(settings.smtp_conn_id) and run_type in settings.run_types and event in settings.events


def previous_entry(
    entries: Sequence[Mapping[str, Any]], manifest: Mapping[str, Any], manifest_paths: Sequence[str]
) -> dict[str, Any] | None:
    """The build a recovery compares with, from the index *before* this build is put into it.

    None unless this build is the branch's newest (a re-run of an old build says nothing about the branch
    now). Then it is this same version's earlier run if the index has one (a failed nightly run again
    and now passing is a recovery), else the entry right after it.
    """
    from .buildindex.entries import entry_from_manifest, merge

    tag = manifest.get("version")
    merged = merge(entries, entry_from_manifest(manifest, manifest_paths))
    if not merged or merged[0].get("version_tag") != tag:
        return None
    same = [entry for entry in entries if entry.get("version_tag") == tag]
    if same:
        return dict(same[0])
    return merged[1] if len(merged) > 1 else None


def previous_build(
    config: Config,
    hook: BuildCacheHook,
    manifest: Mapping[str, Any],
    manifest_paths: Sequence[str],
    run_type: str | None,
) -> dict[str, Any] | None:
    """The previous build of the branch, when a recovery notice may be due (else None, and no request).

    Call it before the summary updates the index. Never raises: a failed read logs a warning and there is
    no recovery notice.
    """
    from .buildindex.entries import manifest_branch
    from .buildindex.store import read_index

    if manifest.get("state") != "success" or not _wanted(config.notifications, run_type, "recovery"):
        return None
    try:
        branch = manifest_branch(manifest)
        if not branch:
            return None
        current = read_index(hook, branch)
        entry = previous_entry(current.entries, manifest, manifest_paths)
    except Exception as err:
        log.warning("No recovery notice: the builds index could not be read: %s: %s", type(err).__name__, err)
        return None
    if entry is None:
        return None
    return {key: entry.get(key) for key in ("version_tag", "state", "run_id", "finished_at")}


def _failure(task_id: str) -> dict[str, str | None]:
    arch, _, step = task_id.rpartition(".")
    return {"task_id": task_id, "step": step, "arch": arch or None}


def make_notice(
    config: Config,
    manifest: Mapping[str, Any],
    root_failures: Sequence[str],
    run_type: str | None,
    previous: Mapping[str, Any] | None,
    *,
    dag_id: str,
    run_id: str,
) -> dict[str, Any]:
    """What the summary decided (its XCom ``notice``): the event (``failure``, ``recovery`` or None) and
    what a mail says. Pure."""
    state = manifest.get("state")
    event = None
    if state == "failed" and _wanted(config.notifications, run_type, "failure"):
        event = "failure"
    elif (
        state == "success"
        and previous
        and previous.get("state") == "failed"
        and _wanted(config.notifications, run_type, "recovery")
    ):
        event = "recovery"
    return {
        "event": event,
        "state": state,
        "branch": manifest.get("branch"),
        "version_tag": manifest.get("version"),
        "commit": manifest.get("commit"),
        "run_type": run_type,
        "dag_id": dag_id,
        "run_id": run_id,
        "failed": [_failure(task_id) for task_id in root_failures],
        "previous": dict(previous) if previous else None,
    }


def airflow_base_url(config: Config) -> str:
    """``web.airflow_url``, else Airflow's ``[api] base_url``, else Airflow's default address."""
    if config.web.airflow_url:
        return config.web.airflow_url
    from airflow.sdk import conf

    base = conf.get("api", "base_url", fallback=None)
    return (base or DEFAULT_AIRFLOW_URL).rstrip("/")


def build_page_url(airflow_url: str, tag: str) -> str:
    """The builds page of one build: ``{airflow_url}/flatcar/builds/<tag>``."""
    return f"{airflow_url.rstrip('/')}{BUILDS_PAGE_PREFIX}/builds/{quote(tag, safe='')}"


def _run_url(airflow_url: str, dag_id: str, run_id: str, task_id: str | None = None) -> str:
    url = f"{airflow_url.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    return f"{url}/tasks/{quote(task_id, safe='')}" if task_id else url


def _link(url: str | None, text: str) -> str:
    if not url:
        return html.escape(text)
    return f'<a href="{html.escape(url, quote=True)}">{html.escape(text)}</a>'


def _where(failure: Mapping[str, Any]) -> str:
    return f"{failure['step']} on {failure['arch']}" if failure.get("arch") else str(failure["step"])


def render_notice(notice: Mapping[str, Any], config: Config, airflow_url: str) -> tuple[str, str]:
    """The mail of a notice: (subject, HTML body). Pure."""
    from .links import public_url

    branch = str(notice.get("branch") or "?")
    tag = notice.get("version_tag")
    shown_tag = str(tag or "(no version)")
    failed = list(notice.get("failed") or [])
    run = _run_url(airflow_url, notice["dag_id"], notice["run_id"])
    page = build_page_url(airflow_url, tag) if tag else None
    if notice["event"] == "failure":
        where = ", ".join(_where(f) for f in failed) or "the summary"
        subject = f"[flatcar] {branch}: build {shown_tag} failed in {where}"
        headline = (
            f"The {notice.get('run_type') or ''} build of branch <b>{html.escape(branch)}</b>, version "
            f"<b>{html.escape(shown_tag)}</b>, failed."
        )
    else:
        previous = notice.get("previous") or {}
        subject = f"[flatcar] {branch}: build {shown_tag} succeeded again"
        headline = (
            f"The {notice.get('run_type') or ''} build of branch <b>{html.escape(branch)}</b>, version "
            f"<b>{html.escape(shown_tag)}</b>, succeeded; the previous build "
            f"<b>{html.escape(str(previous.get('version_tag') or '?'))}</b> had failed."
        )
    tag_url = public_url(config.web.link("tag_url", config.scripts_repo, tag=tag)) if tag else None
    commit = notice.get("commit")
    commit_url = (
        public_url(config.web.link("commit_url", config.scripts_repo, commit=commit)) if commit else None
    )
    rows = [
        ("Branch", html.escape(branch)),
        ("Version", _link(tag_url, shown_tag)),
        ("Commit", _link(commit_url, str(commit)) if commit else "-"),
        ("Run", _link(run, f"{notice['dag_id']} {notice['run_id']}") + f" ({notice.get('run_type')})"),
        ("Build page", _link(page, page) if page else "-"),
    ]
    table = "".join(f"<tr><th align='left'>{name}</th><td>{value}</td></tr>" for name, value in rows)
    parts = [f"<p>{headline}</p>", f"<table>{table}</table>"]
    if notice["event"] == "failure":
        items = []
        for failure in failed:
            log_url = _run_url(airflow_url, notice["dag_id"], notice["run_id"], failure["task_id"])
            where = f"<b>{html.escape(str(failure['step']))}</b>"
            if failure.get("arch"):
                where += f" on <b>{html.escape(str(failure['arch']))}</b>"
            items.append(f"<li>{where} ({_link(log_url, 'task log')})</li>")
        listed = "".join(items) or "<li>summary</li>"
        parts.append(f"<p>Failed (the steps after them did not run):</p><ul>{listed}</ul>")
    if page:
        parts.append(f"<p>The build's page: {_link(page, page)}</p>")
    parts.append("<p>-- flatcar-airflow</p>")
    return subject, "\n".join(parts)


class BuildNotifier(BaseNotifier):
    """The summary task's callback: mails the notice the summary decided (XCom ``notice``).

    A summary that failed without deciding (it crashed) is a failure notice naming the summary. Never
    raises: a notice that cannot be sent is one warning in the summary's log.
    """

    template_fields = ()

    def __init__(self, config: Config, branch: str, *, failed: bool) -> None:
        super().__init__()
        self.config = config
        self.branch = branch
        #: True for the summary's on_failure_callback, False for its on_success_callback.
        self.failed = failed

    def notify(self, context) -> None:
        try:
            self._notify(context)
        except Exception as err:
            # The message of an SMTP error names the server's answer, never the password.
            log.warning("The build notice was not sent: %s: %s", type(err).__name__, err)

    def _notice(self, context) -> dict[str, Any] | None:
        ti = context["ti"]
        notice = ti.xcom_pull(task_ids=ti.task_id, key="notice")
        if notice:
            return dict(notice)
        if not self.failed:
            return None
        # The summary failed before it decided: the build's state is unknown, and that is a failure.
        dag_run = context["dag_run"]
        run_type = str(getattr(dag_run.run_type, "value", dag_run.run_type))
        plan = ti.xcom_pull(task_ids="version") or {}
        manifest = {"state": "failed", "branch": self.branch, "version": plan.get("version")}
        return make_notice(
            self.config, manifest, ["summary"], run_type, None, dag_id=dag_run.dag_id, run_id=dag_run.run_id
        )

    def _notify(self, context) -> None:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        notice = self._notice(context)
        if not notice or not notice.get("event"):
            log.info("No build notice for this run")
            return
        notice["branch"] = notice.get("branch") or self.branch
        settings = self.config.notifications
        subject, body = render_notice(notice, self.config, airflow_base_url(self.config))
        SmtpNotifier(
            to=list(settings.to),
            from_email=settings.from_email,
            subject=subject,
            html_content=body,
            smtp_conn_id=settings.smtp_conn_id,
        ).notify(context)
        log.info("Sent the %s notice %r to %s", notice["event"], subject, ", ".join(settings.to))
