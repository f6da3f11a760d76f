"""The deployment's configuration: one YAML file named by ``FLATCAR_AIRFLOW_CONFIG``.

Read when the DAG files are parsed, so reading it touches no network, git or database. Every key is
documented in docs/configuration.md; the shipped default is ``flatcar_airflow/default-config.yaml``.
A bad file raises :class:`ConfigError`, one message naming every bad key and its problem, which Airflow
shows as the DAG file's import error.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .runners import validate_runner_config
from .runners.base import JOB_NAMESPACE
from .scripts_repo import check_ref_name, check_repo_url
from .steps import ARCHES
from .versions import parse_any, parse_tag

__all__ = ["DEFAULT_CONFIG", "Config", "ConfigError", "load_config"]

DEFAULT_CONFIG = Path(__file__).with_name("default-config.yaml")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
_POOL = re.compile(r"^[A-Za-z0-9_.-]+$")
#: A Celery queue name (the names ``airflow celery worker --queues`` takes, comma-separated).
_QUEUE = re.compile(r"^[A-Za-z0-9_.-]+$")
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?LW#-]+$")


class ConfigError(ValueError):
    """The configuration file is unreadable or breaks a rule; the message names the keys."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _names(values: list[str], what: str) -> list[str]:
    for value in values:
        if not _NAME.fullmatch(value):
            raise ValueError(f"{what} {value!r} must be lower-case letters, digits and '_'")
    if len(set(values)) != len(values):
        raise ValueError(f"{what}s repeat a value")
    return values


def _queue(value: str | None) -> str | None:
    if value is not None and not _QUEUE.fullmatch(value):
        raise ValueError(f"queue {value!r} must be letters, digits, '_', '.' and '-'")
    return value


def _schedule(value: str | None) -> str | None:
    if value is None:
        return None
    fields = value.split()
    if value.startswith("@"):
        if value not in ("@daily", "@hourly", "@weekly", "@monthly", "@yearly"):
            raise ValueError(f"{value!r} is not a cron preset Airflow knows for a periodic schedule")
        return value
    if len(fields) != 5 or not all(_CRON_FIELD.fullmatch(f) for f in fields):
        raise ValueError(f"{value!r} is not a five-field cron expression (e.g. '0 21 * * *')")
    return value


class Identity(_Model):
    """Author, committer and Signed-off-by of the "New version" commits (one line each, no '<' or '>')."""

    name: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^<>\x00-\x1f\x7f]+$")] = "flatcar-ci"
    email: Annotated[str, Field(max_length=200, pattern=r"^[^\s<>@]+@[^\s<>@]+$")] = (
        "infra+ci@flatcar-linux.org"
    )


class ArchConfig(_Model):
    formats: list[str] = Field(default_factory=lambda: ["qemu_uefi"], min_length=1)
    test_vendors: list[str] = Field(default_factory=lambda: ["qemu_uefi"])
    #: The Celery queue of this arch's step tasks (None: the top-level ``queue``).
    queue: str | None = None
    #: The runner of this arch's step tasks (None: the top-level ``runner``).
    runner: dict[str, Any] | None = None
    #: Sign the generic image for Secure Boot (``sbsign_image``) before the vendor images.
    sbsign: bool = False

    @field_validator("queue")
    @classmethod
    def _queue(cls, value: str | None) -> str | None:
        return _queue(value)

    @field_validator("runner", mode="before")
    @classmethod
    def _runner(cls, value: Any) -> dict | None:
        return None if value is None else validate_runner_config(value)

    @field_validator("formats")
    @classmethod
    def _formats(cls, value: list[str]) -> list[str]:
        return _names(value, "image format")

    @field_validator("test_vendors")
    @classmethod
    def _vendors(cls, value: list[str]) -> list[str]:
        return _names(value, "test vendor")


class Pool(_Model):
    name: Annotated[str, Field(pattern=_POOL.pattern)]
    slots: Annotated[int, Field(ge=1, le=1000)]


class Pools(_Model):
    steps: Pool = Pool(name="flatcar_build_steps", slots=2)
    tagging: Pool = Pool(name="flatcar_tagging", slots=1)


class BranchLock(_Model):
    poke_interval: Annotated[float, Field(gt=0, le=3600)] = 60.0
    timeout: Annotated[float, Field(gt=0)] = 2 * 24 * 3600.0


class FullBuild(_Model):
    enabled: bool = True
    branch: str = "main"
    schedule: str | None = "0 21 * * *"
    arches: list[Literal["amd64", "arm64"]] = Field(default_factory=lambda: list(ARCHES), min_length=1)
    seed_sdk: str = "branch"

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        return _schedule(value)

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        return check_ref_name(value, "branch")

    @field_validator("seed_sdk")
    @classmethod
    def _seed(cls, value: str) -> str:
        if value != "branch":
            parse_any(value)
        return value


class OSBuilds(_Model):
    branches: list[str] = Field(default_factory=list)
    schedule: str | None = "0 21 * * *"
    arches: list[Literal["amd64", "arm64"]] = Field(default_factory=lambda: list(ARCHES), min_length=1)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        return _schedule(value)

    @field_validator("branches")
    @classmethod
    def _branches(cls, values: list[str]) -> list[str]:
        for value in values:
            check_ref_name(value, "branch")
        if len(set(values)) != len(values):
            raise ValueError("branches repeat a value")
        return values


_URL_FIELDS = {
    "commit_url": ("commit",),
    "tag_url": ("tag",),
    "compare_url": ("old", "new"),
}


def _web_base(repo: str) -> str | None:
    """The web view of an https scripts repository (``https://github.com/flatcar/scripts.git`` ->
    ``https://github.com/flatcar/scripts``); None for ssh, file and local repositories."""
    from urllib.parse import urlsplit, urlunsplit

    if not repo.startswith("https://"):
        return None
    parts = urlsplit(repo)
    # A token in the URL (https://user:token@host/...) never reaches a link: only the host and the path.
    public = urlunsplit(
        ("https", parts.hostname + (f":{parts.port}" if parts.port else ""), parts.path, "", "")
    )
    return public.removesuffix("/").removesuffix(".git")


class Web(_Model):
    """The builds page (docs/builds-page.md) and the links to the scripts repository's web view.

    A URL template may use ``{repo}`` (the web view of ``scripts_repo``) and its own fields: ``{commit}``,
    ``{tag}``, or ``{old}`` and ``{new}``. None derives it from an https ``scripts_repo`` (GitHub's
    layout); an empty string turns the links off.
    """

    commit_url: str | None = None
    tag_url: str | None = None
    compare_url: str | None = None
    #: The Airflow UI's address as people reach it, for links in notifications (None: Airflow's
    #: ``[api] base_url``).
    airflow_url: str | None = None
    #: The branch badges (``/flatcar/badge/<branch>.svg``) need no login when true.
    public_badge: bool = False
    page_size: Annotated[int, Field(ge=5, le=500)] = 25
    #: How many of a branch's newest builds its charts show.
    chart_builds: Annotated[int, Field(ge=2, le=1000)] = 30
    #: How long (seconds) the page keeps an index it read from the cache before asking again.
    cache_seconds: Annotated[float, Field(ge=0, le=3600)] = 10.0

    @field_validator("commit_url", "tag_url", "compare_url")
    @classmethod
    def _template(cls, value: str | None, info) -> str | None:
        if not value:
            return value
        allowed = {"repo", *_URL_FIELDS[info.field_name]}
        names = set(re.findall(r"{([^{}]*)}", value))
        if names - allowed:
            raise ValueError(
                f"{value!r} uses {', '.join(sorted(names - allowed))}; it may use {{"
                + "}, {".join(sorted(allowed))
                + "}"
            )
        if not re.match(r"^(https?://|\{repo\})", value) or any(ch.isspace() for ch in value):
            raise ValueError(f"{value!r} must be an http(s) URL (or start with {{repo}}) without spaces")
        return value

    @field_validator("airflow_url")
    @classmethod
    def _airflow_url(cls, value: str | None) -> str | None:
        if value and (not re.match(r"^https?://[^\s/]+", value) or any(ch.isspace() for ch in value)):
            raise ValueError(f"{value!r} must be an http(s) URL")
        return value.rstrip("/") if value else value

    def link(self, what: str, scripts_repo: str, **fields: str) -> str | None:
        """The web link ``what`` (commit_url, tag_url, compare_url) with ``fields`` URL-quoted in."""
        from urllib.parse import quote

        template = getattr(self, what)
        base = _web_base(scripts_repo)
        if template is None:
            if base is None:
                return None
            template = {
                "commit_url": "{repo}/commit/{commit}",
                "tag_url": "{repo}/tree/{tag}",
                "compare_url": "{repo}/compare/{old}...{new}",
            }[what]
        if not template or ("{repo}" in template and base is None):
            return None
        if any(not value for value in fields.values()):
            return None
        quoted = {name: quote(str(value), safe="") for name, value in fields.items()}
        return template.format(repo=base or "", **quoted)


_TOOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


class Preflight(_Model):
    """The build host checks before a build's first step on it (docs/runners.md#preflight)."""

    enabled: bool = True
    #: The least free space (GiB) under the runner's root and in docker's data root.
    min_free_gb: Annotated[int, Field(ge=0, le=100000)] = 50
    #: Commands the scripts run on the build host.
    tools: list[str] = Field(
        default_factory=lambda: ["bash", "git", "curl", "jq", "rsync", "ssh", "zstd", "bzip2", "docker"]
    )
    #: What the scripts download from (the container registry, the release mirror); checked for an answer.
    urls: list[str] = Field(
        default_factory=lambda: ["https://ghcr.io/v2/", "https://mirror.release.flatcar-linux.net/"]
    )
    #: How an unreachable ``urls`` entry counts: error, warn, or off (not checked).
    network: Literal["error", "warn", "off"] = "warn"

    @field_validator("tools")
    @classmethod
    def _tools(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _TOOL.fullmatch(value):
                raise ValueError(
                    f"tool {value!r} must be a command name (letters, digits, '.', '_', '+', '-')"
                )
        return values

    @field_validator("urls")
    @classmethod
    def _urls(cls, values: list[str]) -> list[str]:
        for value in values:
            if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?(/[A-Za-z0-9._~/%+-]*)?", value):
                raise ValueError(f"{value!r} must be an http(s) URL without credentials, query or spaces")
        return values


class Notifications(_Model):
    """Failure and recovery mails of scheduled builds (docs/notifications.md)."""

    #: An Airflow connection of type smtp; None sends nothing.
    smtp_conn_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] | None = None
    from_email: Annotated[str, Field(pattern=r"^[^\s@,;<>]+@[^\s@,;<>]+$", max_length=254)] | None = None
    to: list[Annotated[str, Field(pattern=r"^[^\s@,;<>]+@[^\s@,;<>]+$")]] = Field(default_factory=list)
    #: failure: a build failed; recovery: a build succeeded after the branch's previous one failed.
    events: list[Literal["failure", "recovery"]] = Field(default_factory=lambda: ["failure", "recovery"])
    run_types: list[Literal["scheduled", "manual", "backfill"]] = Field(
        default_factory=lambda: ["scheduled"], min_length=1
    )

    @model_validator(mode="after")
    def _recipients(self) -> Notifications:
        if self.smtp_conn_id and not self.to:
            raise ValueError("notifications.smtp_conn_id is set but notifications.to names no recipient")
        return self


_CONN_ID = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=250)]


class Release(_Model):
    """The ``flatcar_release`` DAG (docs/release.md): the cloud offers it may publish to, each with the
    connection of its credentials (None: the offer cannot be chosen)."""

    enabled: bool = True
    offers: dict[Literal["aws", "gce"], _CONN_ID | None] = Field(
        default_factory=lambda: {"aws": "flatcar_release_aws", "gce": "flatcar_release_gce"}
    )

    @property
    def usable_offers(self) -> list[str]:
        return [offer for offer, conn_id in self.offers.items() if conn_id]


class Retention(_Model):
    """The build cache's retention (docs/retention.md): the ``flatcar_buildcache_gc`` DAG's policy."""

    enabled: bool = True
    schedule: str | None = "0 3 * * *"
    keep: Annotated[int, Field(ge=0, le=100000)] = 50
    min_age_days: Annotated[int, Field(ge=0, le=36500)] = 14
    #: the default of the DAG's ``apply`` param (what a scheduled run does): false, a dry run
    apply: bool = False
    #: version tags the builds page pins: never purged
    pinned: list[str] = Field(default_factory=list)
    #: the scripts ref whose garbage_collect.sh runs (default: full.branch)
    ref: str | None = None

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        return _schedule(value)

    @field_validator("pinned")
    @classmethod
    def _pinned(cls, values: list[str]) -> list[str]:
        for value in values:
            parse_tag(value)
        return values

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str | None) -> str | None:
        return None if value is None else check_ref_name(value, "retention.ref")


class Config(_Model):
    scripts_repo: Annotated[str, Field(min_length=1)]
    ci_identity: Identity = Identity()
    buildcache_conn_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] = "flatcar_buildcache"
    signing_conn_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=250)] | None = None
    secrets_conn_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=250)] | None = None
    #: The Secure Boot key (password) and certificate (extra ``cert``) of ``arches.<arch>.sbsign``.
    sbsign_conn_id: _CONN_ID | None = None
    runner: dict[str, Any] = Field(default_factory=lambda: {"type": "local"})
    queue: str = "default"
    arches: dict[Literal["amd64", "arm64"], ArchConfig] = Field(
        default_factory=lambda: {arch: ArchConfig() for arch in ARCHES}
    )
    full: FullBuild = FullBuild()
    os: OSBuilds = OSBuilds()
    image_changes: Literal["last-nightly", "last-release"] | None = "last-nightly"
    step_env: dict[str, str] = Field(default_factory=dict)
    pools: Pools = Pools()
    branch_lock: BranchLock = BranchLock()
    start_date: dt.date = dt.date(2026, 1, 1)
    max_active_runs: Annotated[int, Field(ge=1, le=16)] = 1
    retries: Annotated[int, Field(ge=0, le=10)] = 1
    heartbeat_interval: Annotated[float, Field(gt=0, le=3600)] = 60.0
    tagging_cache: str | None = None
    web: Web = Web()
    notifications: Notifications = Notifications()
    preflight: Preflight = Preflight()
    release: Release = Release()
    retention: Retention = Retention()

    @field_validator("scripts_repo")
    @classmethod
    def _repo(cls, value: str) -> str:
        check_repo_url(value, "scripts_repo")
        return value

    @field_validator("tagging_cache")
    @classmethod
    def _tagging_cache(cls, value: str | None) -> str | None:
        if value is not None and (
            not value.startswith("/")
            or ".." in value.split("/")
            or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value)
        ):
            raise ValueError(
                f"{value[:80]!r} must be an absolute path without '..', whitespace or control characters"
            )
        return value

    @field_validator("runner", mode="before")
    @classmethod
    def _runner(cls, value: Any) -> dict:
        return validate_runner_config(value)

    @field_validator("queue")
    @classmethod
    def _queue(cls, value: str) -> str:
        return _queue(value)

    def arch_queue(self, arch: str) -> str:
        """The Celery queue of ``arch``'s step tasks."""
        return self.arches[arch].queue or self.queue

    def arch_runner(self, arch: str) -> dict[str, Any]:
        """The runner configuration of ``arch``'s step tasks."""
        return self.arches[arch].runner or self.runner

    @field_validator("step_env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r} is not a valid environment variable name")
            if name.startswith(JOB_NAMESPACE):
                # The step wrapper's own variables (its function, arguments, work tree): never the step's.
                raise ValueError(f"{name!r} is in the step wrapper's namespace (FLATCAR_JOB_*)")
        return value

    @model_validator(mode="after")
    def _arches_configured(self) -> Config:
        for where, arches in (("full.arches", self.full.arches), ("os.arches", self.os.arches)):
            missing = [arch for arch in arches if arch not in self.arches]
            if missing:
                raise ValueError(f"{where} names {', '.join(missing)}, which has no entry under 'arches'")
        signed = [arch for arch, conf in self.arches.items() if conf.sbsign]
        if signed and not self.sbsign_conn_id:
            raise ValueError(
                f"arches {', '.join(signed)} sign for Secure Boot (sbsign) but sbsign_conn_id is not set"
            )
        if self.full.enabled and self.full.branch in self.os.branches:
            # Two DAGs of one branch would tag the same nightly versions and each hold only its own
            # branch lock.
            raise ValueError(
                f"os.branches lists {self.full.branch!r}, which flatcar_full builds (full.branch); "
                "a branch gets one pipeline"
            )
        return self


def _format(error: ValidationError, source: str) -> str:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    return f"flatcar-airflow configuration {source}: " + "; ".join(problems)


#: libyaml's safe loader when PyYAML has it: the pure-Python one costs ~40 ms of every DAG parse.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_config(text: str, source: str = "<text>") -> Config:
    try:
        data = yaml.load(text, Loader=_SAFE_LOADER) or {}  # noqa: S506 - a safe loader
    except yaml.YAMLError as err:
        raise ConfigError(f"flatcar-airflow configuration {source} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"flatcar-airflow configuration {source} must be a mapping of keys to values")
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format(err, source)) from None


@lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> Config:
    return parse_config(Path(path).read_text(), path)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """The configuration at ``path``, else ``$FLATCAR_AIRFLOW_CONFIG``, else the shipped default."""
    chosen = Path(path or os.environ.get("FLATCAR_AIRFLOW_CONFIG") or DEFAULT_CONFIG)
    try:
        mtime = chosen.stat().st_mtime
    except OSError as err:
        raise ConfigError(f"flatcar-airflow configuration {chosen} cannot be read: {err.strerror}") from None
    return _load(str(chosen), mtime)
