"""Why a step failed, from its own output: the cause a person reads first (pure functions).

INPUTS:  the last lines a step printed, numbered as the task log numbers them, and its exit status.
OUTPUTS: a :class:`Failure`: the recognised cause (``kind`` and a plain sentence), the line where it
         showed, and the step's last error lines.

Why: a real build that failed for want of a network said only "packages failed with exit status 6 after
4m21s"; the cause ("Could not resolve host ghcr.io") was 60 lines up, and a build host without sudo ended
with a misleading last line. The scripts print what went wrong, but among thousands of lines; the task's
error, the manifest and the builds index carry the recognised cause instead, so the first line a person
reads says it. Patterns are matched newest line first: the last cause printed is the one that stopped
the step (a retry loop prints the same cause many times; the newest names the line to look at).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

__all__ = ["CAUSES", "Failure", "diagnose"]

# (kind, pattern, sentence): the sentence may use the pattern's named groups. Order matters only within a
# line: the first pattern that matches a line wins.
CAUSES: tuple[tuple[str, re.Pattern[str], str], ...] = tuple(
    (kind, re.compile(pattern, re.IGNORECASE), sentence)
    for kind, pattern, sentence in (
        ("disk-full", r"No space left on device|disk quota exceeded|ENOSPC", "disk full on the build host"),
        (
            "missing-tool",
            r"(?:^|[\s:])(?P<tool>[\w.+-]+): (?:command )?not found\b",
            "missing tool on the build host: {tool}",
        ),
        (
            "missing-tool",
            r"exec: \"?(?P<tool>[\w.+-]+)\"?: executable file not found",
            "missing tool on the build host: {tool}",
        ),
        (
            "unreachable",
            r"Could not resolve host:? (?P<host>[\w.-]+)",
            "cannot reach {host}: its name does not resolve (no network or DNS on the build host?)",
        ),
        (
            "unreachable",
            r"lookup (?P<host>[\w.-]+)[^\n]*?: (?:no such host|server misbehaving|"
            r"Temporary failure in name resolution)",
            "cannot reach {host}: its name does not resolve (no network or DNS on the build host?)",
        ),
        (
            "unreachable",
            r"Failed to connect to (?P<host>[\w.-]+)(?: port \d+)?.*?(?:Connection refused|timed out|"
            r"No route to host|Network is unreachable)",
            "cannot reach {host}: the connection failed",
        ),
        (
            "unreachable",
            r"ssh: connect to host (?P<host>[\w.-]+) port \d+: (?P<why>[^\n]+)",
            "cannot reach {host} by ssh: {why}",
        ),
        (
            "unreachable",
            r"(?:Temporary failure in name resolution|Network is unreachable|Connection timed out|"
            r"Connection refused)",
            "a network connection failed",
        ),
        (
            "auth-refused",
            r"Permission denied \((?:publickey|password|keyboard-interactive)[^)]*\)",
            "authentication refused (ssh key not accepted)",
        ),
        (
            "auth-refused",
            r"(?:unauthorized: authentication required|denied: requested access to the resource is denied|"
            r"The requested URL returned error: 40[13]|HTTP/[\d.]+ 40[13]\b|\b401 Unauthorized|"
            r"403 Forbidden)",
            "authentication refused",
        ),
        (
            "missing-input",
            r"(?:The requested URL returned error: 404|\b404 Not Found\b|HTTP/[\d.]+ 404\b)"
            r"(?:.*?(?P<url>https?://\S+))?",
            "a file the step needs is missing (HTTP 404)",
        ),
        (
            "missing-input",
            r"(?:manifest unknown|pull access denied|No such image|not found: manifest)",
            "a container image the step needs is missing",
        ),
        ("no-sudo", r"sudo: a (?:terminal|password) is required", "sudo asked for a password"),
    )
)
# The step's own error lines: what the scripts print when they give up.
_ERROR = re.compile(r"\b(?:error|fatal|failed|failure|cannot|could not|unable to|denied)\b", re.IGNORECASE)
# Lines of the wrapper itself (``[flatcar-airflow] …``) and of Airflow are not the step's.
_OURS = re.compile(r"^\[flatcar-airflow\]")


@dataclass(frozen=True)
class Failure:
    """A failed step's diagnosis: ``summary`` is the sentence for the first line of the error."""

    kind: str
    summary: str
    line: str | None = None
    line_number: int | None = None
    error_lines: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def message(self, step: str, ending: str) -> str:
        """``<step> failed: <cause> (line N of the step's output: <line>); <ending>``, then the step's last
        error lines."""
        where = ""
        if self.line:
            number = (
                f"line {self.line_number} of the step's output" if self.line_number else "the step's output"
            )
            where = f" ({number}: {self.line.strip()[:300]})"
        first = f"{step} failed: {self.summary}{where}; {ending}"
        if not self.error_lines:
            return first
        return (
            first + "\nThe step's last error lines:\n" + "\n".join(f"  {line}" for line in self.error_lines)
        )


def _on_the_cache(line: str, cache_prefix: str | None) -> bool:
    """Whether a disk-full line is the build cache's: it names a path under the cache's directory, or it
    is the remote rsync receiver's (rsync 3.4+ on the server side names files ``/proc/self/fd/N/…``; a
    local receiver, a download onto the build host, names the real path)."""
    if "[receiver]" in line and '"/proc/self/fd/' in line:
        return True
    if not cache_prefix or cache_prefix == "/":
        return False
    return re.search(rf"[\"' ]{re.escape(cache_prefix.rstrip('/'))}/", line) is not None


def diagnose(
    lines: Sequence[tuple[int, str]] | Iterable[str],
    exit_status: int | None = None,
    *,
    cache_prefix: str | None = None,
) -> Failure:
    """The cause of a failed step from its last output ``lines`` (``(number, text)`` or plain text).

    ``cache_prefix`` is the build cache's directory (``BUILDCACHE_PATH_PREFIX``): a full disk reported for
    a path under it, or by the remote rsync receiver of an upload (:func:`_on_the_cache`), is the
    cache's, not the build host's. Unrecognised output gives kind ``unknown`` with the last error line
    (or the last line) as the summary.
    """
    numbered = [item if isinstance(item, tuple) else (None, item) for item in lines]
    numbered = [
        (number, text.rstrip()) for number, text in numbered if text.strip() and not _OURS.match(text)
    ]
    errors = [text for _, text in numbered if _ERROR.search(text)][-5:]
    for number, text in reversed(numbered):
        for kind, pattern, sentence in CAUSES:
            match = pattern.search(text)
            if match:
                groups = {key: value for key, value in match.groupdict().items() if value}
                try:
                    summary = sentence.format(**groups)
                except KeyError:
                    summary = sentence.split(":")[0]
                if kind == "disk-full" and _on_the_cache(text, cache_prefix):
                    summary = "disk full on the build cache (its upload was cut; the step failed)"
                if kind == "missing-tool" and groups.get("tool") == "sudo":
                    kind, summary = (
                        "no-sudo",
                        "the build host has no sudo (the scripts need non-interactive sudo)",
                    )
                return Failure(kind, summary, text, number, errors)
    if numbered:
        number, text = next(((n, t) for n, t in reversed(numbered) if _ERROR.search(t)), numbered[-1])
        status = f"exit status {exit_status}" if exit_status is not None else "it failed"
        return Failure("unknown", f"{status}; its last error: {text.strip()[:300]}", text, number, errors)
    return Failure("unknown", "it printed nothing", None, None, [])
