"""Failure and recovery notices (flatcar_airflow/notifications.py): real pipeline runs under ``dag.test()``
(miniature scripts, the loopback build cache and its builds index) whose summary mails a real SMTP server
on loopback (aiosmtpd, with a login), read as a release engineer reads them; and the decisions as pure
logic."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import re
import socket
import threading
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from connections import CACHE_CONN

from flatcar_airflow.config import parse_config
from flatcar_airflow.notifications import (
    BuildNotifier,
    airflow_base_url,
    make_notice,
    previous_entry,
    render_notice,
)
from flatcar_airflow.pipelines import build_dags

BRANCH = "flatcar-4593"
DAG_ID = "flatcar_os_flatcar_4593"
NIGHT = dt.datetime(2026, 8, 21, 21, 0, tzinfo=dt.UTC)
SMTP_CONN = "flatcar_smtp_test"
PASSWORD = "Sm7p-pa55word-do-not-leak"  # noqa: S105 (a test secret that must appear nowhere)
AIRFLOW_URL = "https://airflow.example.org"
TO = ["release@example.org", "oncall@example.org"]


# -- a real SMTP server on loopback -----------------------------------------------------------------------


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.raw: list[bytes] = []
        self.logins: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's hook name
        with self.lock:
            self.raw.append(envelope.original_content or envelope.content)
            self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult, LoginPassword

        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((login, password))
        return AuthResult(success=login == "ci-mailer" and password == PASSWORD)

    def take(self) -> list[email.message.EmailMessage]:
        with self.lock:
            taken, self.messages = self.messages, []
        return taken


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller

    inbox = _Inbox()
    port = _free_port()
    # AUTH without TLS on loopback (aiosmtpd warns about it; the hook is told to use no TLS).
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=inbox.authenticate,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def _smtp_connection(port: int) -> str:
    return json.dumps(
        {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "login": "ci-mailer",
            "password": PASSWORD,
            "extra": {
                "from_email": "flatcar-ci@example.org",
                "disable_ssl": True,
                "disable_tls": True,
                "retry_limit": 0,
                "timeout": 10,
            },
        }
    )


class _Text(HTMLParser):
    """The text of an HTML mail, and its links."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in ("p", "tr", "th", "td", "li", "br", "ul"):
            self.parts.append(" ")
        if tag == "a":
            self.links += [value for name, value in attrs if name == "href" and value]

    def handle_data(self, data):
        self.parts.append(data)


def _read(message) -> tuple[str, str, list[str]]:
    """(subject, body text with whitespace collapsed, links) of a received mail."""
    html = message.get_body(("html", "plain")).get_content()
    parser = _Text()
    parser.feed(html)
    return str(message["Subject"]), re.sub(r"\s+", " ", "".join(parser.parts)), parser.links


# -- the pipelines ----------------------------------------------------------------------------------------


def _config(origin: str, tmp_path: Path, run_types=("manual",), **overrides) -> str:
    data = {
        "scripts_repo": origin,
        "buildcache_conn_id": CACHE_CONN,
        "runner": {"type": "local", "root": str(tmp_path / "build-root")},
        "tagging_cache": str(tmp_path / "tag-cache"),
        "arches": {
            "amd64": {"formats": ["qemu_uefi"], "test_vendors": []},
            "arm64": {"formats": ["qemu_uefi"], "test_vendors": []},
        },
        "full": {"enabled": False},
        "os": {"branches": [BRANCH], "arches": ["amd64", "arm64"]},
        "image_changes": None,
        "heartbeat_interval": 30,
        "retries": 0,
        "preflight": {"min_free_gb": 1, "network": "off"},
        "web": {
            "airflow_url": AIRFLOW_URL,
            "tag_url": "https://git.example.org/flatcar/scripts/tree/{tag}",
        },
        "notifications": {"smtp_conn_id": SMTP_CONN, "to": TO, "run_types": list(run_types)},
        **overrides,
    }
    return yaml.safe_dump(data)


def _dag(origin, tmp_path, **overrides):
    return build_dags(parse_config(_config(str(origin.path), tmp_path, **overrides)))[DAG_ID]


@pytest.fixture
def cache(build_cache):
    build_cache.clear()
    yield build_cache
    build_cache.clear()


def _notice(run) -> dict:
    return run.get_task_instance("summary").xcom_pull(task_ids="summary", key="notice")


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_failure_then_recovery_mails_and_nothing_on_success_after_success(
    run_dag, mini_origin, cache, connections, released_sdk, smtp_server, tmp_path, monkeypatch, capfd, caplog
):
    inbox, port = smtp_server
    monkeypatch.setenv(f"AIRFLOW_CONN_{SMTP_CONN.upper()}", _smtp_connection(port))
    amd64_only = {"arches": ["amd64"]}

    # 1. A nightly whose vendor images fail on amd64: one failure mail.
    failing = _dag(mini_origin, tmp_path, step_env={"MINI_FAIL_STEP": "vm_build"})
    first = run_dag(failing, logical_date=NIGHT, run_conf=amd64_only)
    assert first.state == "failed" and first.get_task_instance("amd64.vms").state == "failed"
    tag = "stable-4593.2.4-nightly-20260821-2100"
    (mail,) = inbox.take()
    subject, body, links = _read(mail)
    assert BRANCH in subject and tag in subject and "vms on amd64" in subject and "failed" in subject
    assert mail["To"] == ", ".join(TO) and mail["From"] == "flatcar-ci@example.org"
    assert f"branch {BRANCH}, version {tag}, failed" in body
    assert "Branch flatcar-4593" in body and "vms on amd64" in body
    assert "packages on amd64" not in body  # only the root failure, not what did not run after it
    page = f"{AIRFLOW_URL}/flatcar/builds/{tag}"
    assert page in links and page in body
    assert f"https://git.example.org/flatcar/scripts/tree/{tag}" in links
    assert any(link.endswith("/tasks/amd64.vms") for link in links)
    assert inbox.logins == [("ci-mailer", PASSWORD)]  # the hook logged in with the connection's password
    notices = [_notice(first)]
    assert notices[0]["event"] == "failure" and notices[0]["failed"] == [
        {"task_id": "amd64.vms", "step": "vms", "arch": "amd64"}
    ]

    # 2. The same version built again, now passing (its outputs reused from the cache): a recovery mail.
    fixed = _dag(mini_origin, tmp_path)
    second = run_dag(fixed, logical_date=None, run_conf={**amd64_only, "version": tag})
    assert second.state == "success"
    (mail,) = inbox.take()
    subject, body, links = _read(mail)
    assert BRANCH in subject and tag in subject and "succeeded again" in subject
    assert f"the previous build {tag} had failed" in body
    assert page in links
    notices.append(_notice(second))
    assert notices[-1]["event"] == "recovery" and notices[-1]["previous"]["state"] == "failed"

    # 3. A success after a success: nothing.
    third = run_dag(fixed, logical_date=None, run_conf={**amd64_only, "version": tag})
    assert third.state == "success"
    notices.append(_notice(third))
    assert notices[-1]["event"] is None and notices[-1]["previous"]["state"] == "success"
    assert inbox.take() == []

    # The password is nowhere: not in the mails (raw or decoded), the notices, or the task logs.
    out = capfd.readouterr()
    logs = caplog.text + out.out + out.err
    assert "Sent the failure notice" in logs and "Sent the recovery notice" in logs  # logs were captured
    for raw in inbox.raw:
        assert PASSWORD.encode() not in raw
    assert PASSWORD not in body
    assert PASSWORD not in json.dumps(notices)
    assert PASSWORD not in logs


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_unlisted_run_types_send_nothing_and_a_failed_notice_changes_nothing(
    run_dag, mini_origin, smtp_server, tmp_path, monkeypatch, capfd, caplog
):
    inbox, port = smtp_server
    monkeypatch.setenv(f"AIRFLOW_CONN_{SMTP_CONN.upper()}", _smtp_connection(port))
    bad_version = {"version": "stable-4593.0.5"}  # refused by the version task: a quick failed build

    # Notices of scheduled runs only (the default): a failed manual run mails nothing.
    scheduled_only = _dag(mini_origin, tmp_path, run_types=["scheduled"])
    run = run_dag(scheduled_only, logical_date=None, run_conf=bad_version)
    assert run.state == "failed" and _notice(run)["event"] is None
    assert inbox.take() == []

    # The SMTP server is unreachable: the notice fails, with one warning, and the build keeps its state.
    monkeypatch.setenv(f"AIRFLOW_CONN_{SMTP_CONN.upper()}", _smtp_connection(_free_port()))
    run = run_dag(_dag(mini_origin, tmp_path), logical_date=None, run_conf=bad_version)
    assert run.state == "failed" and run.get_task_instance("summary").state == "failed"
    assert _notice(run)["event"] == "failure" and _notice(run)["failed"][0]["task_id"] == "version"
    out = capfd.readouterr()
    logs = caplog.text + out.out + out.err
    assert "The build notice was not sent" in logs
    assert PASSWORD not in logs


def test_no_smtp_connection_no_callbacks(tmp_path):
    config = yaml.safe_load(_config("https://example.org/scripts.git", tmp_path))
    dag = build_dags(parse_config(yaml.safe_dump(config)))[DAG_ID]
    callbacks = dag.task_dict["summary"].on_failure_callback
    assert [type(c) for c in callbacks] == [BuildNotifier]
    del config["notifications"]
    dag = build_dags(parse_config(yaml.safe_dump(config)))[DAG_ID]
    assert not dag.task_dict["summary"].on_failure_callback
    assert not dag.task_dict["summary"].on_success_callback


# -- the decisions (pure logic) ---------------------------------------------------------------------------


def _entry(tag: str, state: str, day: int) -> dict:
    return {
        "version_tag": tag,
        "state": state,
        "run_time": f"2026-08-{day:02d}T21:00:00+00:00",
        "run_id": tag,
    }


def _manifest(tag: str, state: str, day: int) -> dict:
    return {
        "version": tag,
        "versionfile": {"FLATCAR_VERSION": "4593.2.4+x", "FLATCAR_SDK_VERSION": "4593.0.0"},
        "branch": BRANCH,
        "ref": BRANCH,
        "state": state,
        "run_time": f"2026-08-{day:02d}T21:00:00+00:00",
        "steps": {},
        "arches": {},
        "tests": {},
    }


def test_the_previous_build_is_the_one_before_the_newest():
    old, failed = (
        _entry("stable-4593.2.4-nightly-20260820-2100", "success", 20),
        _entry("stable-4593.2.4-nightly-20260821-2100", "failed", 21),
    )
    new = _manifest("stable-4593.2.4-nightly-20260822-2100", "success", 22)
    assert previous_entry([failed, old], new, [])["version_tag"] == failed["version_tag"]
    # A re-run of a failed build, now the newest: its own earlier run is the previous build.
    rerun = _manifest(failed["version_tag"], "success", 21)
    assert previous_entry([failed, old], rerun, [])["state"] == "failed"
    # A re-run of an old build says nothing about the branch now.
    assert previous_entry([failed, old], _manifest(old["version_tag"], "success", 20), []) is None
    assert previous_entry([], new, []) is None


def test_events_follow_the_configuration(tmp_path):
    config = parse_config(_config("https://example.org/scripts.git", tmp_path, run_types=["scheduled"]))
    failed = {"state": "failed", "branch": BRANCH, "version": "stable-4593.2.4"}
    ok = {**failed, "state": "success"}
    previous = {"version_tag": "stable-4593.2.3", "state": "failed"}

    def event(manifest, run_type, prev=None, cfg=config):
        return make_notice(cfg, manifest, [], run_type, prev, dag_id=DAG_ID, run_id="r")["event"]

    assert event(failed, "scheduled") == "failure"
    assert event(failed, "manual") is None and event(failed, "backfill") is None
    assert event(ok, "scheduled", previous) == "recovery"
    assert event(ok, "scheduled", {**previous, "state": "success"}) is None
    assert event(ok, "scheduled") is None
    only_failures = parse_config(
        _config(
            "https://example.org/scripts.git",
            tmp_path,
            notifications={"smtp_conn_id": SMTP_CONN, "to": TO, "events": ["failure"]},
        )
    )
    assert event(ok, "scheduled", previous, only_failures) is None


def test_the_build_page_link_falls_back_to_the_api_base_url(tmp_path, monkeypatch):
    config = parse_config(
        _config("https://token@github.com/flatcar/scripts.git", tmp_path, web={}, run_types=["scheduled"])
    )
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.internal:8443/")
    assert airflow_base_url(config) == "https://airflow.internal:8443"
    notice = make_notice(
        config,
        {"state": "failed", "branch": BRANCH, "version": "stable-4593.2.4", "commit": "c" * 40},
        ["tag"],
        "scheduled",
        None,
        dag_id=DAG_ID,
        run_id="scheduled__2026-08-21T21:00:00+00:00",
    )
    subject, body = render_notice(notice, config, airflow_base_url(config))
    assert subject == "[flatcar] flatcar-4593: build stable-4593.2.4 failed in tag"
    assert 'href="https://airflow.internal:8443/flatcar/builds/stable-4593.2.4"' in body
    # Links to the scripts repository's web view carry no credentials of its URL.
    assert "https://github.com/flatcar/scripts/tree/stable-4593.2.4" in body and "token" not in body
    assert "https://github.com/flatcar/scripts/commit/" + "c" * 40 in body
