"""Nightly versions, computed from a run's time and never from the wall clock.

A nightly's version must be reproducible: a backfilled or re-run nightly of 2026-08-21 must get exactly
the version the scheduled run of that night got (``main-4799.0.0-nightly-20260821-2100``), whenever it
actually runs. So every function here takes the run's time explicitly.

* main: the major number is the number of days from 2013-07-01 (Flatcar's epoch, ``COREOS_EPOCH`` in the
  scripts' ``common.sh``) to the run's date; minor and patch are 0.
* a maintenance branch (``flatcar-MAJOR``): the version number is the branch's ``FLATCAR_VERSION_ID`` from
  version.txt and the channel comes from its minor number.
* the build id is ``nightly-YYYYMMDD-hhmm`` in UTC.
"""

from __future__ import annotations

import datetime as dt

from .versions import FlatcarVersion, VersionError, channel_for_minor, parse_version_number

__all__ = [
    "FLATCAR_EPOCH",
    "branch_nightly",
    "main_major",
    "main_nightly",
    "nightly_build_id",
    "run_time",
]

#: Day 0 of main's major numbers (Fedora's 2013-07-01 release, ``COREOS_EPOCH=1372636800``).
FLATCAR_EPOCH = dt.date(2013, 7, 1)


def _utc(when: dt.datetime) -> dt.datetime:
    if not isinstance(when, dt.datetime):
        raise VersionError(f"a run time must be a datetime, got {type(when).__name__}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise VersionError(
            f"run time {when.isoformat()} has no time zone; nightly versions are computed in UTC"
        )
    return when.astimezone(dt.UTC)


def run_time(logical_date: dt.datetime | None, run_after: dt.datetime | None) -> dt.datetime:
    """The time a run's nightly version is computed from: its logical date, else its run_after.

    Scheduled and backfilled runs have a logical date (the cron tick); a manual trigger from the UI or the
    REST API may have none, and then the time it was asked to run after stands in.
    """
    when = logical_date if logical_date is not None else run_after
    if when is None:
        raise VersionError(
            "the run has neither a logical date nor a run_after time to compute a version from"
        )
    return _utc(when)


def main_major(day: dt.date | dt.datetime) -> int:
    """Main's major version number for a UTC date: days since 2013-07-01."""
    if isinstance(day, dt.datetime):
        day = _utc(day).date()
    days = (day - FLATCAR_EPOCH).days
    if days <= 0:
        raise VersionError(f"{day.isoformat()} is not after Flatcar's epoch {FLATCAR_EPOCH.isoformat()}")
    return days


def nightly_build_id(when: dt.datetime, *, intermediate: bool = False) -> str:
    """``nightly-YYYYMMDD-hhmm`` (UTC) for a run time, with ``-INTERMEDIATE`` for a two-phase first phase."""
    build_id = _utc(when).strftime("nightly-%Y%m%d-%H%M")
    return f"{build_id}-INTERMEDIATE" if intermediate else build_id


def main_nightly(when: dt.datetime, *, intermediate: bool = False) -> FlatcarVersion:
    """The nightly version of ``main`` for a run time, e.g. ``main-4799.0.0-nightly-20260821-2100``."""
    return FlatcarVersion(main_major(when), 0, 0, nightly_build_id(when, intermediate=intermediate), "main")


def branch_nightly(version_id: str, when: dt.datetime) -> FlatcarVersion:
    """The nightly version of a maintenance branch whose version.txt has ``FLATCAR_VERSION_ID=version_id``.

    The channel follows the minor number: ``4593.2.5`` gives ``stable-4593.2.5-nightly-…``.
    """
    number = parse_version_number(version_id)
    if number.build_id:
        raise VersionError(f"FLATCAR_VERSION_ID {version_id!r} must be a plain MMMM.m.p without a build id")
    channel = channel_for_minor(number.minor)
    if channel is None:
        raise VersionError(
            f"FLATCAR_VERSION_ID {version_id} has minor number {number.minor}, which denotes no release "
            "channel (0 alpha, 1 beta, 2 stable, 3 lts)"
        )
    return number.with_channel(channel).with_build_id(nightly_build_id(when))
