"""The runner interface: where a step's wrapper (``flatcar-step.sh``) runs, and how we follow it.

A runner gets a :class:`Job` (what to run: the scripts repo, the tag, the step function and its
arguments, environment, private files such as the build cache key) and must:

* make a private job directory on the build host with ``job.env`` and the files, and start
  ``flatcar-step.sh JOB_DIR`` in a new process group (or container) with standard input closed;
* stream the wrapper's output to ``on_output`` while it runs, in blocks of complete lines (``"a\nb"``,
  no final newline; :class:`OutputLines` makes them: per block, not per line, so a step printing a
  gigabyte is not slowed by its log), and call ``on_tick`` when it has read all there is for now and
  about once a second while the step is quiet (the caller logs what waits, and heartbeats);
* return a :class:`JobOutcome` with the wrapper's ``result.json`` and reports;
* :meth:`Runner.kill` from another thread: stop the whole tree (the wrapper then runs ``ci-cleanup.sh``);
* never run one job twice: before starting, stop any earlier attempt of the same job key that still runs.

Values are quoted with :func:`shlex.quote` in exactly one place, :func:`render_job_env`. The wrapper's
own variables (``FLATCAR_JOB_*``) are its namespace: a step's environment may not use it (except
:data:`OPERATOR_JOB_VARIABLES`, which the step operator sets from checked values), and they are written
after the step's, so the wrapper's values win even over an ``export`` of the same name. The build cache
settings reach the job's line-based ssh config and ``ci-config.env``: they are checked here too, not only
by the hook that read them.
"""

from __future__ import annotations

import json
import re
import shlex
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources

__all__ = [
    "JOB_NAMESPACE",
    "MAX_LINE_BYTES",
    "OPERATOR_JOB_VARIABLES",
    "Job",
    "JobOutcome",
    "OutputLines",
    "Runner",
    "RunnerError",
    "job_key",
    "mask_job_secrets",
    "render_job_env",
    "wrapper_script",
]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: The wrapper's variables: the job's origin, ref, function, arguments, work tree, cache settings.
JOB_NAMESPACE = "FLATCAR_JOB_"
#: Variables of the namespace that the step operator itself sets in a job's ``env`` (never a secret):
#: the branch a backfilled nightly pins ``origin/<branch>`` to.
OPERATOR_JOB_VARIABLES = frozenset({"FLATCAR_JOB_PIN_ORIGIN_BRANCH"})
_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,254}")
#: What each build cache setting may be (the hook checks the connection the same way).
_CACHE_VALUES = {
    "server": re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*"),
    "port": re.compile(r"[1-9][0-9]{0,4}"),
    "user": re.compile(r"[A-Za-z_][A-Za-z0-9._-]{0,31}"),
    "path_prefix": re.compile(r"/(?:[A-Za-z0-9._+@=, -]+/?)*"),
    "key_file": re.compile(r"/(?:[A-Za-z0-9._+@=,-]+/?)*"),
}
_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


#: A longer line (no newline yet) is passed on in pieces of this size: memory stays bounded.
MAX_LINE_BYTES = 1 << 20


class OutputLines:
    """Bytes of a step's output in, blocks of complete lines out (to ``on_output``), decoded as UTF-8.

    Only the last, incomplete line waits for more; :meth:`close` passes it on at the end (a step's last
    line without a newline is not lost).
    """

    def __init__(self, on_output: Callable[[str], None]) -> None:
        self._on_output = on_output
        self._partial = b""

    def feed(self, chunk: bytes) -> None:
        data = self._partial + chunk if self._partial else chunk
        head, newline, rest = data.rpartition(b"\n")
        if newline:
            self._on_output(head.decode("utf-8", "replace"))
        if len(rest) >= MAX_LINE_BYTES:
            self._on_output(rest.decode("utf-8", "replace"))
            rest = b""
        self._partial = rest

    def close(self) -> None:
        if self._partial:
            self._on_output(self._partial.decode("utf-8", "replace"))
            self._partial = b""


class RunnerError(RuntimeError):
    """The runner could not start, follow or stop a step (not the step's own failure)."""


def wrapper_script() -> str:
    return resources.files("flatcar_airflow.runners").joinpath("flatcar-step.sh").read_text()


def job_key(*parts: object) -> str:
    """A file-name-safe, stable identity of a job (dag, run, task, map index): the same for all attempts."""
    text = "__".join(_KEY_CHARS.sub("_", str(part)).strip("_") for part in parts if part not in (None, ""))
    if not text:
        raise ValueError("a job key needs at least one part")
    return text[:200]


@dataclass
class Job:
    key: str
    attempt: int
    origin: str
    ref: str
    script: str
    function: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # relative to the job dir, written 0600
    cache: Mapping[str, str] = field(default_factory=dict)  # server, port, user, path_prefix
    keep_workspace: bool = False
    #: Names of ``env``/``secret_env`` variables the wrapper also writes to the work tree's
    #: ``sdk_container/.env``, where the scripts' containers read their credentials (release.sh).
    sdk_env: list[str] = field(default_factory=list)


@dataclass
class JobOutcome:
    rc: int
    cleanup_rc: int = 0
    skip_build: bool = False
    signal: bool = False
    images: list[tuple[str, int]] = field(default_factory=list)
    tap: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_files(cls, result: str, images: str | None, tap: Mapping[str, str]) -> JobOutcome:
        data = json.loads(result)
        listing = []
        for line in (images or "").splitlines():
            size, _, name = line.partition(" ")
            if name:
                listing.append((name, int(size)))
        return cls(
            rc=int(data["rc"]),
            cleanup_rc=int(data.get("cleanup_rc", 0)),
            skip_build=bool(data.get("skip_build")),
            signal=bool(data.get("signal")),
            images=listing,
            tap=dict(tap),
        )


#: Job files that hold secrets (the build cache key, the signing key); ``ssl/`` holds public CAs.
SECRET_FILE_DIRS = ("ssh/", "secrets/")
#: Shorter lines of a secret are not masked on their own (a key's last line may be a few bytes).
_MASK_MIN = 16


def mask_job_secrets(job: Job) -> None:
    """Mask every secret a job carries in this process's logs, as a whole and line by line.

    A step that prints a secret file (``cat "$SIGNING_KEY"``) logs it one line at a time: Airflow masks a
    connection's password or a sensitive extra as a whole value only, so no line of it would match. Every
    runner calls this before it starts the job.
    """
    from airflow.sdk.log import mask_secret

    texts = [str(value) for value in job.secret_env.values()]
    texts += [
        content.decode("utf-8", "replace")
        for name, content in job.files.items()
        if name.startswith(SECRET_FILE_DIRS)
    ]
    for text in texts:
        if text.strip():
            mask_secret(text)
        for line in text.splitlines():
            line = line.strip()
            if len(line) >= _MASK_MIN and not line.startswith("-----"):
                mask_secret(line)


def render_job_env(job: Job, *, mirror: str, workspace: str, pool: str = "") -> str:
    """``job.env`` for the wrapper. Every value passes through :func:`shlex.quote` here, and only here.

    Refuses (``ValueError``) an environment name that is not a shell name or is in the wrapper's
    namespace, and a build cache setting the wrapper would write into a line-based file unchecked.
    ``pool``: the directory of the host's pooled work trees of this scripts repo ("": a fresh work tree
    at ``workspace`` for every step).
    """
    q = shlex.quote
    lines = []
    for name, value in {**job.env, **job.secret_env}.items():
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"environment variable name {name!r} is not a valid shell name")
        if name.startswith(JOB_NAMESPACE) and (name not in OPERATOR_JOB_VARIABLES or name in job.secret_env):
            raise ValueError(
                f"environment variable {name!r} is in the step wrapper's namespace ({JOB_NAMESPACE}*): "
                "use another name"
            )
        if name in OPERATOR_JOB_VARIABLES and (not _REF.fullmatch(str(value)) or ".." in str(value)):
            raise ValueError(f"{name} {str(value)[:80]!r} is not a branch name")
        lines.append(f"export {name}={q(str(value))}")
    # The wrapper's own values last: they win over anything above.
    lines += [
        f"FLATCAR_JOB_ORIGIN={q(job.origin)}",
        f"FLATCAR_JOB_REF={q(job.ref)}",
        f"FLATCAR_JOB_MIRROR={q(mirror)}",
        f"FLATCAR_JOB_WORKSPACE={q(workspace)}",
        f"FLATCAR_JOB_POOL={q(pool)}",
        f"FLATCAR_JOB_SCRIPT={q(job.script)}",
        f"FLATCAR_JOB_FUNCTION={q(job.function)}",
        "FLATCAR_JOB_ARGS=(" + " ".join(q(arg) for arg in job.args) + ")",
        f"FLATCAR_JOB_KEEP_WORKSPACE={1 if job.keep_workspace else 0}",
    ]
    variables = {**job.env, **job.secret_env}
    for name in job.sdk_env:
        if name not in variables:
            raise ValueError(f"sdk_container/.env variable {name!r} is not in the job's environment")
    lines.append("FLATCAR_JOB_SDK_ENV=(" + " ".join(q(name) for name in job.sdk_env) + ")")
    for name, pattern in _CACHE_VALUES.items():
        value = str(job.cache.get(name) or "")
        if value and (not pattern.fullmatch(value) or ".." in value.split("/")):
            raise ValueError(f"build cache setting {name} {value[:80]!r} is not allowed in a job")
        lines.append(f"FLATCAR_JOB_CACHE_{name.upper()}={q(value)}")
    return "\n".join(lines) + "\n"


class Runner(ABC):
    """Runs :class:`Job` s on one kind of build host. Instances serve one task attempt."""

    #: Seconds the wrapper gets after SIGTERM to stop the step and run ``ci-cleanup.sh``.
    stop_grace: float = 120.0

    def __init__(self) -> None:
        self._killed = threading.Event()

    @abstractmethod
    def run(self, job: Job, on_output: Callable[[str], None], on_tick: Callable[[], None]) -> JobOutcome:
        """Run the job to its end and return its outcome; raises :class:`RunnerError` if it cannot.

        ``on_output`` gets the wrapper's output in blocks of complete lines, in order, nothing lost."""

    @abstractmethod
    def kill(self) -> None:
        """Stop the running job's whole process tree (or container); its cleanup runs."""

    @abstractmethod
    def probe(self, script: str, env: Mapping[str, str], timeout: float = 90.0) -> tuple[int, str]:
        """Run a short, read-only bash ``script`` where the steps run (the preflight checks), with ``env``
        as its environment; ``(exit status, output)``. Raises :class:`RunnerError` if it cannot run."""

    @property
    def killed(self) -> bool:
        return self._killed.is_set()

    def describe(self) -> str:
        return type(self).__name__
