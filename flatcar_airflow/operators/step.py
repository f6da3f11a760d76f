"""The step operator: runs one ci-automation step through a runner, checked against the build cache.

Every step operator (``operators/steps.py``) is this class with one :class:`~flatcar_airflow.steps.Step`:
composition, not a class per step and runner. For one task attempt it:

1. validates the build (the tag task's result), the architecture and the step's options: a bad value
   fails the task at once (no retries) before anything else happens;
2. checks in one batch that the step's inputs are in the build cache (its prerequisites, and any
   artifact records passed from upstream tasks) and fails naming the missing ones;
3. skips the work when this version's outputs are already in the cache (a re-run), unless ``force`` or
   this is a later attempt of the task (a retry or a clear): an earlier attempt cut mid-upload (a full
   cache disk, a lost connection) may have left a truncated file under its name, since the scripts'
   ``copy_to_buildcache`` uses ``rsync --partial``; running the step again rewrites it;
4. runs ``source <script>; <function> <args>`` at the version tag through the configured runner, the
   output streamed into the task log (lines read together are one record: ``step_log.py``), with a
   heartbeat line when the step is quiet;
   ``./ci-cleanup.sh`` runs after the step whatever happens, and ``on_kill`` stops the whole tree;
5. raises a skip when the step asked the build to stop (``./skip-build`` of packages_tag);
6. checks that the outputs are in the cache and returns their artifact records (XCom).

Every step task has two extra links (:mod:`flatcar_airflow.links`): "Build cache", the step's directory
in the build cache over HTTPS, and "Version tag", the tag in the scripts repository's web view. Their URLs
are stored right after step 1, so a failed step has them too.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseHook, BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from ..artifacts import ArtifactRef
from ..config import Web
from ..failures import diagnose
from ..hooks.buildcache import BuildCacheHook, CacheEntry
from ..links import BuildCacheLink, VersionTagLink, persist_step_links
from ..runners import Job, Runner, RunnerError, job_key, make_runner, validate_runner_config
from ..runners.base import JOB_NAMESPACE
from ..scripts_repo import mask_url_credentials
from ..steps import STEPS, BuildContext, Step, tap_summary
from ..versions import VersionError
from .step_log import StepLog

__all__ = ["FlatcarStepOperator"]

_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: The most lines of a step's report kept in the cache (the task log has every line).
_REPORT_LINES = 20000
#: Steps that always run: their outputs' presence does not say their work is done (a release to a new
#: offer, say, finds the AMI lists of an earlier one).
_NO_RERUN_SKIP = {"test", "packages_tag", "image_changes", "release"}


class FlatcarStepOperator(BaseOperator):
    """Run one Flatcar ci-automation step. See the module docstring for what an attempt does.

    :param step: step name, one of :data:`flatcar_airflow.steps.STEPS`
    :param build: the tag task's result (``{"tag": …, "versionfile": {…}}``), usually its XComArg
    :param scripts_repo: URL the build hosts fetch the scripts repository from
    :param runner: runner configuration (see :mod:`flatcar_airflow.runners`)
    :param buildcache_conn_id: ``flatcar_buildcache`` connection
    :param arch: target architecture for per-arch steps
    :param options: step options (``seed_version``, ``formats``, ``vendor``, ``tests``, ``compare_to``)
    :param inputs: artifact records (or lists of them) from upstream tasks that must be in the cache
    :param env: extra environment for the step (not secret; e.g. ``MAX_RETRIES``, ``PARALLEL_TESTS``)
    :param secrets_conn_id: optional connection whose extra (a JSON object of VARIABLE: value) is given to
        the step as environment; values are masked
    :param signing_conn_id: optional connection: login = ``SIGNER``, password = the armored private key
        (given to the step as the file ``SIGNING_KEY``)
    :param force: run even if the outputs exist and disable the scripts' nightly shortcuts
    :param heartbeat_interval: seconds of silence after which a heartbeat line is logged
    :param keep_workspace: keep the work tree after the step (debugging)
    :param web: the configuration's ``web`` section, for the "Version tag" link (default: derived from an
        https ``scripts_repo``)
    """

    template_fields = ("build", "arch", "options", "inputs", "env", "force", "scripts_repo")
    operator_extra_links = (BuildCacheLink(), VersionTagLink())
    ui_color = "#e0f0ff"
    step_name: str = ""

    def __init__(
        self,
        *,
        build: Any,
        scripts_repo: str,
        runner: Mapping | str = "local",
        buildcache_conn_id: str = BuildCacheHook.default_conn_name,
        step: str | None = None,
        arch: str | None = None,
        options: Mapping[str, Any] | None = None,
        inputs: Any = None,
        env: Mapping[str, str] | None = None,
        secrets_conn_id: str | None = None,
        signing_conn_id: str | None = None,
        force: bool | str = False,
        heartbeat_interval: float = 60.0,
        keep_workspace: bool = False,
        web: Web | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.step = step or self.step_name
        if self.step not in STEPS:
            raise ValueError(f"step {self.step!r} is not one of {', '.join(STEPS)}")
        self.build = build
        self.scripts_repo = scripts_repo
        mask_url_credentials(scripts_repo)  # a token in an https URL stays out of logs and rendered fields
        self.runner_config = validate_runner_config(runner)
        self.buildcache_conn_id = buildcache_conn_id
        self.arch = arch
        self.options = dict(options or {})
        self.inputs = inputs
        self.env = dict(env or {})
        self.secrets_conn_id = secrets_conn_id
        self.signing_conn_id = signing_conn_id
        self.force = force
        self.heartbeat_interval = heartbeat_interval
        self.keep_workspace = keep_workspace
        self.web = web or Web()
        self._runner: Runner | None = None
        self._started_at = ""

    def render_template_fields(self, context, jinja_env=None) -> None:
        super().render_template_fields(context, jinja_env)
        mask_url_credentials(str(self.scripts_repo))  # a templated URL, before its fields are stored

    # -- execution -----------------------------------------------------------------------------------
    def execute(self, context) -> dict:
        spec: Step = STEPS[self.step]
        self._started_at = _now()
        ctx, options = self._validated(spec)
        self._skip_unselected(ctx, options)
        force = str(self.force).lower() in ("true", "1", "yes") or bool(_mapping(self.build).get("force"))
        hook = BuildCacheHook(self.buildcache_conn_id)
        try:
            settings = hook.settings
        except ValueError as err:  # a bad connection does not get better on a retry
            raise AirflowFailException(str(err)) from None
        self._persist_links(context, ctx, options, settings.http_url)

        inputs = spec.inputs(ctx, options) + _records(self.inputs)
        self._require(hook, inputs, "input")
        outputs = spec.outputs(ctx, options)
        attempt = int(getattr(context["ti"], "try_number", 1) or 1)
        if outputs and not force and self.step not in _NO_RERUN_SKIP and attempt > 1:
            self.log.info(
                "Attempt %d of %s: running the step again rather than reusing outputs an earlier attempt "
                "may have left incomplete",
                attempt,
                self.step,
            )
        elif outputs and not force and self.step not in _NO_RERUN_SKIP:
            found = hook.check(ref.path for ref in outputs)
            if all(entry.exists for entry in found.values()):
                self.log.info(
                    "The outputs of %s for %s exist already: not building again (force to rebuild)",
                    self.step,
                    ctx.tag,
                )
                return self._record(ctx, self._detailed(hook, outputs, found), reused=True)

        job = self._job(context, spec, ctx, options, settings, force)
        self._runner = make_runner(self.runner_config)
        self.log.info(
            "Running %s for %s%s on %s",
            self.step,
            ctx.tag,
            f" ({ctx.arch})" if ctx.arch else "",
            self._runner.describe(),
        )
        started = time.monotonic()
        # The step's output in batched records, its numbered tail (for the cause of a failure,
        # flatcar_airflow/failures.py) and, for a report step, its report lines (operators/step_log.py).
        output = StepLog(
            lambda text: self.log.info("%s", text), report_limit=_REPORT_LINES if spec.report else 0
        )

        def on_tick() -> None:
            output.tick()
            now = time.monotonic()
            if now - output.last_output >= self.heartbeat_interval:
                output.last_output = now
                self.log.info(
                    "[flatcar-airflow] %s still running, no output for %.0f s (elapsed %s)",
                    self.step,
                    self.heartbeat_interval,
                    _duration(now - started),
                )

        try:
            outcome = self._runner.run(job, output.write, on_tick)
        except ValueError as err:  # the job's values refused before anything ran (runners/base.py)
            raise AirflowFailException(f"{self.step}: invalid job: {err}") from None
        except RunnerError as err:
            raise AirflowException(f"{self.step}: {err}") from None
        finally:
            output.flush()
        elapsed = _duration(time.monotonic() - started)
        record_extra: dict[str, Any] = {}
        if outcome.tap:
            summary = self._tap(outcome.tap, options)
            record_extra["tests"] = summary
            context["ti"].xcom_push(key="tests", value=summary)
        if self._runner.killed or outcome.signal:
            raise AirflowException(f"{self.step} was stopped after {elapsed}; its cleanup ran")
        if outcome.rc != 0:
            failure = diagnose(
                [(number, _redact(line)) for number, line in output.tail],
                outcome.rc,
                cache_prefix=settings.path_prefix,
            )
            context["ti"].xcom_push(key="failure", value=failure.to_dict())
            raise AirflowException(failure.message(self.step, f"exit status {outcome.rc} after {elapsed}"))
        if outcome.cleanup_rc != 0:
            self.log.warning("./ci-cleanup.sh exited with %s", outcome.cleanup_rc)
        if outcome.skip_build:
            raise AirflowSkipException(
                f"{self.step} wrote ./skip-build: no changes since the last build of this branch and its "
                "images exist, so the build stops here"
            )
        try:
            listed = spec.listed_outputs(ctx, options, outcome.images)
        except ValueError as err:
            raise AirflowException(f"{self.step}: {err}") from None
        produced = _unique(outputs + listed)
        if spec.report:
            produced.append(self._store_report(hook, spec, ctx, output.report))
        found = self._require(hook, produced, "output")
        self.log.info("%s finished in %s with %d artifact(s)", self.step, elapsed, len(produced))
        return self._record(ctx, self._detailed(hook, produced, found), reused=False, **record_extra)

    def on_kill(self) -> None:
        if self._runner is not None:
            self.log.info(
                "Stopping %s: its process tree and containers are stopped, then cleaned up", self.step
            )
            self._runner.kill()

    # -- helpers -------------------------------------------------------------------------------------
    def _persist_links(self, context, ctx: BuildContext, options: Mapping, cache_url: str) -> None:
        """Store the extra links' URLs (a link that cannot be made never fails the step)."""
        try:
            links = persist_step_links(
                context,
                step=self.step,
                ctx=ctx,
                options=options,
                cache_base_url=cache_url,
                web=self.web,
                scripts_repo=self.scripts_repo,
            )
        except Exception as err:
            self.log.warning("No extra links for %s: %s: %s", self.step, type(err).__name__, err)
            return
        self.log.info("Build cache: %s", links["cache"] or "(no link)")

    def _validated(self, spec: Step) -> tuple[BuildContext, dict]:
        try:
            ctx = BuildContext.from_build(self.build, self.arch or None)
            options = dict(self.options)
            plan = _mapping(self.build)
            if options.get("formats") is None and ctx.arch and ctx.arch in plan.get("formats", {}):
                options["formats"] = plan["formats"][ctx.arch]
            spec.validate(ctx, options)
            spec.args(ctx, options)
        except (ValueError, VersionError, KeyError, TypeError) as err:
            raise AirflowFailException(f"{self.step}: invalid input: {err}") from None
        return ctx, options

    def _skip_unselected(self, ctx: BuildContext, options: Mapping) -> None:
        """A pipeline run may build a subset of its DAG's arches and test vendors (its params)."""
        plan = _mapping(self.build)
        if ctx.arch and "arches" in plan and ctx.arch not in plan["arches"]:
            raise AirflowSkipException(
                f"{ctx.arch} is not built in this run (arches: {', '.join(plan['arches'])})"
            )
        vendors = plan.get("test_vendors", {}).get(ctx.arch or "", None)
        if self.step == "test" and vendors is not None and options.get("vendor") not in vendors:
            raise AirflowSkipException(
                f"{options.get('vendor')} is not tested in this run ({', '.join(vendors)})"
            )

    def _require(self, hook: BuildCacheHook, refs: Sequence[ArtifactRef], what: str) -> dict[str, CacheEntry]:
        """Check that every artifact is in the cache (one batch); returns the entries for the records."""
        if not refs:
            return {}
        found = hook.check(ref.path for ref in refs)
        missing = [ref for ref in refs if not found[ref.path].exists]
        if missing:
            names = ", ".join(f"{ref.kind} {ref.path}" for ref in missing)
            message = f"{self.step}: missing {what}(s) in the build cache: {names}"
            if what == "input":
                raise AirflowFailException(message + " (the step that produces it did not succeed)")
            raise AirflowException(message)
        return found

    def _detailed(
        self, hook: BuildCacheHook, refs: Sequence[ArtifactRef], found: Mapping[str, CacheEntry]
    ) -> list[dict]:
        """Records with URL, size and image id, from the entries the existence check already fetched."""
        records = []
        for ref in refs:
            entry = found[ref.path]
            image_id = None
            if ref.kind == "container" and ref.extra.get("id_path"):
                try:
                    image_id = hook.read_text(ref.extra["id_path"]).strip() or None
                except Exception:  # the .id file is informative only
                    image_id = None
            records.append(
                ref.with_details(url=entry.url, size=entry.size or ref.size, image_id=image_id).to_dict()
            )
        return records

    def _job(self, context, spec: Step, ctx: BuildContext, options: dict, settings, force: bool) -> Job:
        ti = context["ti"]
        env = {**settings.step_environment(), **{str(k): str(v) for k, v in self.env.items()}}
        if not spec.per_arch:
            env.setdefault("ARCH", "amd64")
        if force:
            env["AVOID_NIGHTLY_BUILD_SHORTCUTS"] = "1"
        plan = _mapping(self.build)
        if plan.get("backfill") and plan.get("ref"):
            env["FLATCAR_JOB_PIN_ORIGIN_BRANCH"] = str(plan["ref"])
        files, cache = settings.job_access()
        secret_env = self._secret_env(files)
        return Job(
            key=job_key(ti.dag_id, ti.run_id, ti.task_id, ti.map_index if ti.map_index >= 0 else None),
            attempt=int(ti.try_number or 1),
            origin=self.scripts_repo,
            ref=ctx.tag.tag,
            script=spec.script,
            function=spec.function,
            args=spec.args(ctx, options),
            env=env,
            secret_env=secret_env,
            files=files,
            cache=cache,
            keep_workspace=self.keep_workspace,
            sdk_env=self._sdk_env_names(secret_env),
        )

    def _secret_env(self, files: dict[str, bytes]) -> dict[str, str]:
        from airflow.sdk.log import mask_secret

        secret_env: dict[str, str] = {}
        if self.secrets_conn_id:
            extra = BaseHook.get_connection(self.secrets_conn_id).extra_dejson
            for name, value in extra.items():
                mask_secret(str(value))
                if not _SHELL_NAME.fullmatch(str(name)) or str(name).startswith(JOB_NAMESPACE):
                    raise AirflowFailException(
                        f"secrets connection {self.secrets_conn_id!r}: variable {str(name)[:60]!r} is not "
                        f"allowed (a shell variable name, not in the wrapper's {JOB_NAMESPACE}* namespace)"
                    )
                secret_env[str(name)] = str(value)
        if self.signing_conn_id:
            conn = BaseHook.get_connection(self.signing_conn_id)
            if not conn.login or not conn.password:
                raise AirflowFailException(
                    f"signing connection {self.signing_conn_id!r} needs login (SIGNER) and password (key)"
                )
            mask_secret(conn.password)
            secret_env["SIGNER"] = conn.login
            files["secrets/signing.key"] = conn.password.encode()
        return secret_env

    def _sdk_env_names(self, secret_env: Mapping[str, str]) -> list[str]:
        """Variables also written to the work tree's ``sdk_container/.env`` (none; the release's)."""
        return []

    def _store_report(
        self, hook: BuildCacheHook, spec: Step, ctx: BuildContext, lines: list[str]
    ) -> ArtifactRef:
        """The step's printed report, into the build cache (the builds page shows it with the build)."""
        ref = spec.report_artifact(ctx)
        text = "\n".join(_redact(line) for line in lines) + "\n"
        if len(lines) >= _REPORT_LINES:
            text += f"[flatcar-airflow] report cut at {_REPORT_LINES} lines; the task log has all of it\n"
        try:
            hook.upload(ref.path, text.encode())
        except Exception as err:
            raise AirflowException(f"{self.step}: cannot store its report {ref.path}: {err}") from None
        self.log.info("Stored the %s report (%d lines) at %s", self.step, len(lines), hook.url(ref.path))
        return ref

    def _tap(self, tap: Mapping[str, str], options: Mapping) -> dict:
        vendor = options.get("vendor", "")
        text = tap.get(f"results-{vendor}.tap") or next(iter(tap.values()))
        summary = tap_summary(text)
        self.log.info(
            "Test summary for %s: %d passed (%d of them on a re-run), %d failed, %d skipped",
            vendor,
            summary["passed"],
            summary["flaky"],
            summary["failed"],
            summary["skipped"],
        )
        for name in summary["failures"]:
            self.log.info("  not ok: %s", name)
        self.log.info("TAP summary (results-%s.tap):\n%s", vendor, text)
        return summary

    def _record(self, ctx: BuildContext, artifacts: list[dict], *, reused: bool, **extra) -> dict:
        return {
            "step": self.step,
            "started_at": self._started_at,
            "finished_at": _now(),
            "tag": ctx.tag.tag,
            "version": ctx.os.versionfile_version,
            "sdk_version": ctx.sdk.versionfile_version,
            "arch": ctx.arch,
            "reused": reused,
            "artifacts": artifacts,
            **extra,
        }


def _mapping(value: Any) -> Mapping:
    return value if isinstance(value, Mapping) else {}


def _records(value: Any) -> list[ArtifactRef]:
    """Artifact records from upstream XCom: a record, a step result, or lists of those."""
    if value in (None, "", []):
        return []
    if isinstance(value, Mapping):
        if "artifacts" in value:
            return _records(value["artifacts"])
        return [ArtifactRef.from_dict(dict(value))]
    if isinstance(value, (list, tuple)):
        return [ref for item in value for ref in _records(item)]
    raise AirflowFailException(f"inputs must be artifact records or step results, got {type(value).__name__}")


def _unique(refs: Sequence[ArtifactRef]) -> list[ArtifactRef]:
    seen: dict[str, ArtifactRef] = {}
    for ref in refs:
        seen.setdefault(ref.path, ref)
    return list(seen.values())


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _redact(line: str) -> str:
    """A line of the step's output with the masked secrets replaced, before it is kept anywhere else.

    The task log redacts what it writes, but a failure's cause (XCom, the task's error, the manifest, the
    builds index and page) and the stored report are the step's own lines, kept outside the log.
    """
    from airflow.sdk.log import redact

    return str(redact(line))
