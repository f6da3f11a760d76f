"""A step's output into the task log: in batches, with bounded memory, keeping what the operator needs.

Why: one logging call per line costs about 55 µs in a task (formatting, masking, the record's trip to the
supervisor): a step printing 200 MB took 11 s longer than its wrapper alone, and one printing more than
about 18,000 lines a second was slowed by the full pipe. Runners hand over blocks of complete lines
(:meth:`StepLog.write`, ``"line\\nline"``); lines that arrive within :data:`BATCH_SECONDS` of each other
(or up to :data:`BATCH_BYTES`) are one log record, and a record is written as soon as the step goes
quiet (:meth:`StepLog.tick`), so a slow step's lines are not held back. Per block, not per line, the log
keeps:

* the number of lines so far and the last :data:`TAIL_LINES`, numbered as the step printed them, for the
  cause of a failure (:func:`flatcar_airflow.failures.diagnose`);
* the first ``report_limit`` lines that are not the wrapper's own, for steps whose printed output is
  their report (only until the limit: then no per-line work at all);
* when the step last printed, for the heartbeat line of a quiet step.

Memory stays flat: a batch is at most :data:`BATCH_BYTES`, the tail and the report are bounded.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["BATCH_BYTES", "BATCH_SECONDS", "TAIL_LINES", "StepLog"]

#: Lines read within this many seconds of the batch's first are logged as one record.
BATCH_SECONDS = 0.05
#: A batch is logged when it holds this many bytes (a step printing fast).
BATCH_BYTES = 1 << 20
#: The last lines of a step searched for the cause of its failure.
TAIL_LINES = 400
_OURS = "[flatcar-airflow]"


class StepLog:
    """Collects a step's output for one task attempt; ``emit(text)`` writes one log record."""

    def __init__(
        self,
        emit: Callable[[str], None],
        *,
        report_limit: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._emit = emit
        self._clock = clock
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._pending_since = 0.0
        self.lines = 0
        # The newest blocks (number of their first line, text), just enough to hold TAIL_LINES lines:
        # the numbered tail is made from them only when asked for (a failure), not per block.
        self._recent: deque[tuple[int, str]] = deque()
        self._recent_lines = 0
        self.report: list[str] = []
        self.report_limit = report_limit
        self.last_output = clock()

    def write(self, text: str) -> None:
        """One or more complete lines (joined by ``\\n``, no final newline) the step printed."""
        now = self._clock()
        self.last_output = now
        count = text.count("\n") + 1
        self._recent.append((self.lines + 1, text))
        self._recent_lines += count
        self.lines += count
        while len(self._recent) > 1:
            oldest_first = self._recent[0][0]
            oldest_lines = self._recent[1][0] - oldest_first
            if self._recent_lines - oldest_lines < TAIL_LINES:
                break
            self._recent.popleft()
            self._recent_lines -= oldest_lines
        if len(self.report) < self.report_limit:
            for line in text.split("\n"):
                if not line.startswith(_OURS):
                    self.report.append(line)
                    if len(self.report) >= self.report_limit:
                        break
        if not self._pending:
            self._pending_since = now
        self._pending.append(text)
        self._pending_bytes += len(text)
        if self._pending_bytes >= BATCH_BYTES or now - self._pending_since >= BATCH_SECONDS:
            self.flush()

    @property
    def tail(self) -> list[tuple[int, str]]:
        """The last :data:`TAIL_LINES` lines, each with its number in the step's output."""
        numbered: list[tuple[int, str]] = []
        for first, text in self._recent:
            numbered.extend(enumerate(text.split("\n"), first))
        return numbered[-TAIL_LINES:]

    def tick(self) -> None:
        """The runner has read everything there is for now (or a second passed): log what waits."""
        self.flush()

    def flush(self) -> None:
        if self._pending:
            text = "\n".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            self._emit(text)
