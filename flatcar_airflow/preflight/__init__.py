"""Preflight: a build host checked in seconds for what the scripts need, before a build's first step.

INPUTS:  a runner (local, ssh, docker: where the steps will run), the build cache connection's settings
         (ssh address, HTTPS URL, CA), the configuration's ``preflight`` section (free space, tools, the
         registry and mirror URLs and whether their absence is an error or a warning).
OUTPUTS: a :class:`Report`: one :class:`Check` per item (``ok``, ``warn``, ``error``), and a message that
         names every problem at once.

Why: without it, a build host without network, sudo or disk fails minutes into a step (the scripts'
curl retries), with a misleading last line. ``checks.sh`` runs on the build host through the same runner
as the steps (so it sees what they will see) and only reads: it writes nothing but a temporary
directory it removes. The pipelines run it as the ``preflight`` tasks; ``flatcar-airflow doctor`` runs it
for an operator setting up a host.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..hooks.buildcache import BuildCacheSettings
    from ..runners.base import Runner

__all__ = ["Check", "Report", "checks_script", "parse_checks", "preflight_env", "run_preflight"]


@dataclass(frozen=True)
class Check:
    name: str
    level: str  # ok, warn, error
    detail: str


@dataclass
class Report:
    """The checks of one build host, as the runner ``target`` reaches it."""

    target: str
    checks: list[Check] = field(default_factory=list)

    @property
    def problems(self) -> list[Check]:
        return [check for check in self.checks if check.level == "error"]

    @property
    def warnings(self) -> list[Check]:
        return [check for check in self.checks if check.level == "warn"]

    @property
    def ok(self) -> bool:
        return not self.problems

    def message(self) -> str:
        """The first line a person reads: every problem at once (or that all is well)."""
        if self.problems:
            count = len(self.problems)
            listed = "; ".join(check.detail for check in self.problems)
            return f"preflight on {self.target}: {count} problem{'s' if count > 1 else ''}: {listed}"
        extra = f" ({len(self.warnings)} warning(s): {'; '.join(c.detail for c in self.warnings)})"
        return f"preflight on {self.target}: ready" + (extra if self.warnings else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "ok": self.ok,
            "checks": [check.__dict__ for check in self.checks],
        }


def checks_script() -> str:
    return resources.files("flatcar_airflow.preflight").joinpath("checks.sh").read_text()


def preflight_env(options: Any, settings: BuildCacheSettings | None, root: str) -> dict[str, str]:
    """The script's environment from the configuration's ``preflight`` and the cache connection.

    Every value here is checked already (the configuration's model, the hook's connection checks), and
    reaches the script as an environment variable, never as shell text.
    """
    env = {
        "PREFLIGHT_ROOT": root,
        "PREFLIGHT_MIN_FREE_GB": str(options.min_free_gb),
        "PREFLIGHT_TOOLS": " ".join(options.tools),
        "PREFLIGHT_URLS": " ".join(options.urls) if options.network != "off" else "",
        "PREFLIGHT_NETWORK": "error" if options.network == "error" else "warn",
    }
    if settings is not None:
        env["PREFLIGHT_CACHE_SERVER"] = settings.server
        env["PREFLIGHT_CACHE_PORT"] = str(settings.port)
        env["PREFLIGHT_CACHE_URL"] = settings.http_url
        pem = settings.ca_pem()
        if pem:
            env["PREFLIGHT_CA_PEM"] = pem.decode()
    return env


def parse_checks(output: str) -> list[Check]:
    """The ``CHECK`` lines of the script's output; anything else is ignored."""
    checks = []
    for line in output.splitlines():
        parts = line.split("\t", 3)
        if len(parts) == 4 and parts[0] == "CHECK" and parts[2] in ("ok", "warn", "error"):
            checks.append(Check(parts[1], parts[2], parts[3]))
    return checks


def run_preflight(
    runner: Runner, options: Any, settings: BuildCacheSettings | None, *, timeout: float = 90.0
) -> Report:
    """Run the checks through ``runner`` and read their report. A runner that cannot run the script at
    all (build host unreachable, runner image missing) is itself the one problem reported."""
    from ..runners.base import RunnerError

    report = Report(runner.describe())
    try:
        status, output = runner.probe(checks_script(), preflight_env(options, settings, runner.root), timeout)
    except RunnerError as err:
        report.checks.append(Check("runner", "error", str(err)))
        return report
    report.checks = parse_checks(output)
    if status != 0 or not report.checks:
        tail = output.strip().splitlines()[-1:] or ["no output"]
        report.checks.append(Check("runner", "error", f"the checks did not run (exit {status}): {tail[0]}"))
    return report


def describe(report: Report) -> list[str]:
    """Lines for a log or a terminal: one per check."""
    marks: Mapping[str, str] = {"ok": "ok   ", "warn": "WARN ", "error": "ERROR"}
    return [f"{marks[check.level]} {check.name:<12} {check.detail}" for check in report.checks]
