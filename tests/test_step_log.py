"""A step's output into the task log (pure logic): the runners' line splitter and the operator's batches.

End to end, every runner kind's flood of lines is checked in test_runners.py; here what a real step's
output rarely shows: a last line without a newline, a line longer than the limit, a character split
between two reads, batching by time, the tail's numbers across blocks, the report's limit.
"""

from __future__ import annotations

from flatcar_airflow.operators.step_log import BATCH_SECONDS, TAIL_LINES, StepLog
from flatcar_airflow.runners.base import MAX_LINE_BYTES, OutputLines


def test_output_lines_keeps_order_splits_long_lines_and_flushes_the_last_partial_line():
    blocks: list[str] = []
    lines = OutputLines(blocks.append)
    lines.feed(b"one\ntw")
    lines.feed(b"o\nthree\n")
    lines.feed("caf\u00e9 \u2603\n".encode()[:5])  # the read ends inside "é"
    lines.feed("caf\u00e9 \u2603\n".encode()[5:])
    lines.feed(b"x" * MAX_LINE_BYTES + b"y")  # no newline yet, but too long to wait for
    lines.feed(b"z\nlast, no newline")
    assert blocks == ["one", "two\nthree", "caf\u00e9 \u2603", "x" * MAX_LINE_BYTES + "y", "z"]
    lines.close()
    assert blocks[-1] == "last, no newline"
    lines.close()
    assert len(blocks) == 6  # nothing twice


def test_step_log_batches_by_time_and_keeps_a_numbered_tail_and_the_report():
    now = [0.0]
    records: list[str] = []
    log = StepLog(records.append, report_limit=5, clock=lambda: now[0])

    log.write("[flatcar-airflow] work tree ready\nr1")
    log.write("r2\nr3")
    assert records == []  # within the batch time: one record later
    now[0] += BATCH_SECONDS
    log.write("r4")
    assert records == ["[flatcar-airflow] work tree ready\nr1\nr2\nr3\nr4"]
    log.write("\n".join(f"n{i}" for i in range(1000)))
    log.tick()  # the runner read all there is: what waits is logged now
    assert records[-1].startswith("n0\n") and records[-1].endswith("\nn999")
    log.write("the end")
    log.flush()
    assert records[-1] == "the end"

    assert log.lines == 1 + 4 + 1000 + 1
    assert log.tail[-1] == (1006, "the end")
    assert log.tail[0] == (1006 - TAIL_LINES + 1, f"n{1000 - TAIL_LINES + 1}")
    assert len(log.tail) == TAIL_LINES
    assert log.report == ["r1", "r2", "r3", "r4", "n0"]  # the wrapper's own lines are not the report


def test_step_log_memory_stays_bounded_with_many_small_blocks():
    log = StepLog(lambda text: None)
    for i in range(1, 5001):
        log.write(f"line {i}")
    assert log.tail == [(i, f"line {i}") for i in range(5001 - TAIL_LINES, 5001)]
    assert len(log._recent) <= TAIL_LINES + 1
