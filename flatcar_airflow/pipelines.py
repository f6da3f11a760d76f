"""DAG factories: the full build (a new SDK, then the OS image) and one OS-only DAG per release branch.

Both are built from the configuration (:mod:`flatcar_airflow.config`) at parse time, with no network,
git or database access. Their shape::

    branch_lock → version → tag → [sdk_bootstrap → sdk_container →]         (full builds only)
        per arch: packages_<arch> → push_packages_<arch>
                                  → image_<arch> [→ sbsign_image_<arch>] → vms_<arch> → test_<arch>_<vendor>
                                                 → image_changes_<arch>
        (one test task per vendor; sbsign_image where ``arches.<arch>.sbsign`` is true)
    → summary (always: writes the build manifest; fails the run if a step failed)

``branch_lock`` waits while another run of the DAG (a backfill's, say) builds the branch;
``version`` turns the run (its time, type and params) into what to build; ``tag`` creates or reuses
the version tag (and takes the nightly shortcut, which skips everything downstream); the step tasks
run the scripts' steps through the configured runner.

Queues (docs/scaling-out.md): every task goes to the configuration's ``queue`` but the per-arch steps,
which go to their arch's queue and run through their arch's runner (``arches.<arch>.queue``,
``arches.<arch>.runner``; either falls back to the top-level one).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from airflow.sdk import DAG, CronTriggerTimetable, Param, TaskGroup, task

from .config import Config
from .operators import (
    BranchLockSensor,
    ImageChangesOperator,
    ImageOperator,
    PackagesOperator,
    PackagesTagOperator,
    PreflightOperator,
    PushPackagesOperator,
    SbsignImageOperator,
    SdkBootstrapOperator,
    SdkContainerOperator,
    TestsOperator,
    VendorImagesOperator,
)
from .tagging import BuildKind

__all__ = ["FULL_DAG_ID", "build_dags", "full_build_dag", "os_build_dag", "os_dag_id"]

FULL_DAG_ID = "flatcar_full"
# The params' JSON-schema patterns are searched (re.search): a plain "$" also matches before a final
# newline ("main\n" would pass); "$(?!\n)" does not, and unlike "\Z" the UI's browser-side check knows it.
_TAG_PATTERN = (
    r"^(main|alpha|beta|stable|lts)-(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(-[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)?$(?!\n)"
)
_BUILD_ID_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$(?!\n)"
_REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]*$(?!\n)"
_VERSION_PATTERN = (
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)([+-][A-Za-z0-9][A-Za-z0-9._-]*)?$(?!\n)"
)
_NAME_ITEMS = {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_]*$(?!\n)"}


def os_dag_id(branch: str) -> str:
    """``flatcar_os_<branch>`` with every non-alphanumeric character as ``_``."""
    return "flatcar_os_" + re.sub(r"[^A-Za-z0-9]", "_", branch)


def build_dags(config: Config, only: str | None = None) -> dict[str, DAG]:
    """Every configured DAG, or with ``only`` (a DAG id) that DAG alone if it is configured.

    A task's process parses the DAG file to run one task of one DAG; building only that DAG spares
    it the others (with 10 release branches, a tenth of the work; docs/benchmarks.md).
    """
    dags: dict[str, DAG] = {}
    if config.full.enabled and only in (None, FULL_DAG_ID):
        dags[FULL_DAG_ID] = full_build_dag(config)
    for branch in config.os.branches:
        if only in (None, os_dag_id(branch)):
            dags[os_dag_id(branch)] = os_build_dag(config, branch)
    return dags


def full_build_dag(config: Config) -> DAG:
    return _build_dag(
        config, BuildKind.FULL, config.full.branch, FULL_DAG_ID, config.full.schedule, config.full.arches
    )


def os_build_dag(config: Config, branch: str) -> DAG:
    return _build_dag(config, BuildKind.OS, branch, os_dag_id(branch), config.os.schedule, config.os.arches)


def _params(config: Config, kind: BuildKind, branch: str, arches: list[str]) -> dict[str, Param]:
    params = {
        "ref": Param(
            branch,
            type="string",
            pattern=_REF_PATTERN,
            minLength=1,
            maxLength=255,
            title="Branch, tag or commit",
            description=f"What to build: a branch (default {branch}), a tag or a full commit id. "
            "Only a nightly of a branch head pushes the branch.",
            section="What to build",
        ),
        "version": Param(
            None,
            type=["null", "string"],
            pattern=_TAG_PATTERN,
            maxLength=128,
            title="Version tag",
            description="The full version tag to create, e.g. main-4799.0.1-my-fix or stable-4593.2.6. Leave "
            "empty to compute it from the branch and the run's time. A production build is a version without "
            "a build id; every other build carries one.",
            section="Version",
        ),
        "build_id": Param(
            None,
            type=["null", "string"],
            pattern=_BUILD_ID_PATTERN,
            maxLength=100,
            title="Build id suffix",
            description="With an empty version: the suffix for the computed version number, e.g. pr-1234 "
            "(default: nightly-YYYYMMDD-hhmm of the run's time).",
            section="Version",
        ),
        "arches": Param(
            list(arches),
            type="array",
            items={"type": "string", "enum": list(arches)},
            minItems=1,
            uniqueItems=True,
            examples=list(arches),
            title="Architectures",
            section="What to build",
        ),
        "formats": Param(
            None,
            type=["null", "array"],
            items=_NAME_ITEMS,
            uniqueItems=True,
            title="Vendor image formats",
            description="Empty: the formats configured per architecture.",
            section="Images and tests",
        ),
        "test_vendors": Param(
            None,
            type=["null", "array"],
            items=_NAME_ITEMS,
            uniqueItems=True,
            title="Test vendors",
            description="A subset of the configured vendors; empty: all of them.",
            section="Images and tests",
        ),
        "force": Param(
            False,
            type="boolean",
            title="Force",
            description="Build even if nothing changed since the last nightly; rebuild outputs that exist.",
            section="Advanced",
        ),
    }
    if kind is BuildKind.FULL:
        params["seed_sdk"] = Param(
            None,
            type=["null", "string"],
            pattern=_VERSION_PATTERN,
            maxLength=128,
            title="Seed SDK",
            description="The SDK to bootstrap the new SDK from, e.g. 4790.0.0. Empty: the SDK recorded on "
            "the branch before this build (the previous nightly's).",
            section="Advanced",
        )
    return params


def _build_dag(
    config: Config, kind: BuildKind, branch: str, dag_id: str, schedule: str | None, arches: list[str]
) -> DAG:
    what = "new SDK, then the OS image" if kind is BuildKind.FULL else "OS image with the branch's SDK"
    dag = DAG(
        dag_id,
        schedule=CronTriggerTimetable(schedule, timezone="UTC") if schedule else None,
        start_date=dt.datetime.combine(config.start_date, dt.time(), tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=config.max_active_runs,
        params=_params(config, kind, branch, arches),
        tags=["flatcar", kind.value],
        doc_md=f"Flatcar {kind.value} build of `{branch}` ({what}). See docs/pipelines.md.",
        default_args={
            "retries": config.retries,
            "retry_delay": dt.timedelta(minutes=1),
            "queue": config.queue,
        },
    )
    common: dict[str, Any] = {
        "scripts_repo": config.scripts_repo,
        "runner": config.runner,
        "buildcache_conn_id": config.buildcache_conn_id,
        "secrets_conn_id": config.secrets_conn_id,
        "signing_conn_id": config.signing_conn_id,
        "env": dict(config.step_env),
        "heartbeat_interval": config.heartbeat_interval,
        "pool": config.pools.steps.name,
        "web": config.web,
    }
    with dag:
        lock = BranchLockSensor(
            task_id="branch_lock",
            branch=branch,
            poke_interval=config.branch_lock.poke_interval,
            timeout=config.branch_lock.timeout,
            retries=0,
        )
        version = _version_task(config, kind, branch)
        lock >> version
        checks = _preflight_tasks(config, arches) if config.preflight.enabled else {}
        tag = _tag_task(config, kind, after_checks=bool(checks))(version)
        for check in checks.values():
            # After the params are judged: a refused run touches no build host.
            version >> check >> tag
        build = tag
        steps: list = []
        if kind is BuildKind.FULL:
            boot = SdkBootstrapOperator(
                task_id="sdk_bootstrap",
                build=build,
                seed_version="{{ ti.xcom_pull(task_ids='tag')['seed_sdk'] }}",
                **common,
            )
            sdk = SdkContainerOperator(task_id="sdk_container", build=build, inputs=boot.output, **common)
            tag >> boot >> sdk
            steps += [boot, sdk]
            first = sdk
        else:
            packages_tag = PackagesTagOperator(task_id="packages_tag", build=build, **common)
            tag >> packages_tag
            steps.append(packages_tag)
            first = packages_tag
        for arch in arches:
            on_arch = {**common, "queue": config.arch_queue(arch), "runner": config.arch_runner(arch)}
            with TaskGroup(group_id=arch):
                packages = PackagesOperator(task_id="packages", build=build, arch=arch, **on_arch)
                push = PushPackagesOperator(
                    task_id="push_packages", build=build, arch=arch, inputs=packages.output, **on_arch
                )
                image = ImageOperator(
                    task_id="image", build=build, arch=arch, inputs=packages.output, **on_arch
                )
                signed = image
                if config.arches[arch].sbsign:
                    # Secure Boot: the signed image replaces the unsigned one before anything uses it.
                    signed = SbsignImageOperator(
                        task_id="sbsign_image",
                        build=build,
                        arch=arch,
                        inputs=image.output,
                        sbsign_conn_id=config.sbsign_conn_id,
                        **on_arch,
                    )
                    image >> signed
                    steps.append(signed)
                vms = VendorImagesOperator(
                    task_id="vms", build=build, arch=arch, formats=None, inputs=signed.output, **on_arch
                )
                first >> packages >> [push, image]
                signed >> vms
                steps += [packages, push, image, vms]
                for vendor in config.arches[arch].test_vendors:
                    test = TestsOperator(
                        task_id=f"test_{vendor}",
                        build=build,
                        arch=arch,
                        vendor=vendor,
                        inputs=vms.output,
                        **on_arch,
                    )
                    vms >> test
                    steps.append(test)
                if config.image_changes:
                    changes = ImageChangesOperator(
                        task_id="image_changes",
                        build=build,
                        arch=arch,
                        compare_to=config.image_changes,
                        **on_arch,
                    )
                    image >> changes
                    steps.append(changes)
        summary = _summary_task(config, branch)()
        [lock, version, tag, *steps] >> summary
    return dag


def _preflight_tasks(config: Config, arches: list[str]) -> dict[str | None, Any]:
    """One ``preflight`` per build host: the default runner's, and ``<arch>.preflight`` for an arch whose
    steps run elsewhere (their own runner or queue: another worker or build host)."""
    options = config.preflight.model_dump()
    checks: dict[str | None, Any] = {
        None: PreflightOperator(
            task_id="preflight",
            runner=config.runner,
            buildcache_conn_id=config.buildcache_conn_id,
            options=options,
        )
    }
    for arch in arches:
        if config.arch_runner(arch) != config.runner or config.arch_queue(arch) != config.queue:
            checks[arch] = PreflightOperator(
                task_id=f"{arch}.preflight",
                runner=config.arch_runner(arch),
                buildcache_conn_id=config.buildcache_conn_id,
                options=options,
                arch=arch,
                queue=config.arch_queue(arch),
            )
    return checks


def _version_task(config: Config, kind: BuildKind, branch: str):
    @task(task_id="version", retries=0)
    def version(**context) -> dict:
        from .build_plan import resolve_build

        return resolve_build(config, kind, branch, context)

    return version()


def _tag_task(config: Config, kind: BuildKind, *, after_checks: bool = False):
    # After the preflight tasks: an arch's check is skipped when the run does not build it.
    trigger = {"trigger_rule": "none_failed"} if after_checks else {}

    @task(task_id="tag", pool=config.pools.tagging.name, **trigger)
    def tag(plan: dict, **context) -> dict:
        from .build_plan import tag_build

        return tag_build(config, kind, plan)

    return tag


def _summary_task(config: Config, branch: str):
    callbacks: dict[str, Any] = {}
    if config.notifications.smtp_conn_id:
        # Failure and recovery mails (docs/notifications.md): the summary decides, its callbacks send.
        from .notifications import BuildNotifier

        callbacks = {
            "on_success_callback": BuildNotifier(config, branch, failed=False),
            "on_failure_callback": BuildNotifier(config, branch, failed=True),
        }

    @task(task_id="summary", trigger_rule="all_done", retries=0, **callbacks)
    def summary(**context) -> dict:
        from .build_plan import summarize

        return summarize(config, context)

    return summary
