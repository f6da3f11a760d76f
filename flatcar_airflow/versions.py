"""Flatcar version numbers, tag names and build ids: parsing, validation and the derived forms.

Flatcar's scripts repo is authoritative for versioning (see the seed document "On versioning" and the
scripts' ``sdk_lib/sdk_container_common.sh``). A version appears in four spellings:

* the tag name, channel-prefixed: ``stable-4593.2.5-nightly-20260821-2100`` (what ``check_version_string``
  accepts and what ``update_and_push_version`` tags);
* the plain version number ``4593.2.5`` (``FLATCAR_VERSION_ID``);
* the version.txt form with ``+`` before the build id: ``4593.2.5+nightly-20260821-2100``;
* the docker form, ``+`` replaced by ``-``: ``4593.2.5-nightly-20260821-2100`` (image tags, cache dirs).

These strings end up in git refs, file paths, docker tags and shell environments, so validation here is
stricter than the scripts' own regex: every accepted string is safe in all of those places, and every
rejected one gets a :class:`VersionError` that names the rule it breaks.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass, replace

__all__ = [
    "CHANNELS",
    "MAX_LENGTH",
    "RELEASE_CHANNELS",
    "FlatcarVersion",
    "VersionError",
    "channel_for_minor",
    "check_safe_string",
    "parse_any",
    "parse_build_id",
    "parse_tag",
    "parse_version_number",
]

#: Tag prefixes the scripts accept (``check_version_string``).
CHANNELS = ("main", "alpha", "beta", "stable", "lts")
#: The minor number encodes the stabilisation level of a release channel.
RELEASE_CHANNELS = {0: "alpha", 1: "beta", 2: "stable", 3: "lts"}
#: Longest string we accept anywhere (docker tags are limited to 128 characters).
MAX_LENGTH = 128

_SHELL_METACHARACTERS = frozenset("|&;<>()$`\\\"'*?[]#~=%!{}^,:@/")
_NUMBER = r"(?:0|[1-9][0-9]*)"
_VERNUM_RE = re.compile(rf"^(?P<major>{_NUMBER})\.(?P<minor>{_NUMBER})\.(?P<patch>{_NUMBER})$")
_TAG_RE = re.compile(
    rf"^(?P<channel>[a-z]+)-(?P<major>{_NUMBER})\.(?P<minor>{_NUMBER})\.(?P<patch>{_NUMBER})(?:-(?P<build>.+))?$"
)
_NUMBER_FORM_RE = re.compile(
    rf"^(?P<major>{_NUMBER})\.(?P<minor>{_NUMBER})\.(?P<patch>{_NUMBER})(?:[+-](?P<build>.+))?$"
)
_NIGHTLY_RE = re.compile(r"^nightly-(?P<date>[0-9]{8})-(?P<time>[0-9]{4})(?P<intermediate>-INTERMEDIATE)?$")
_FREE_BUILD_ID_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")


class VersionError(ValueError):
    """A version, tag name or build id breaks one of Flatcar's versioning rules (the message names it)."""


def check_safe_string(text: object, what: str) -> str:
    """Reject strings that would be unsafe as a git ref, path component, docker tag or shell word.

    This runs before any format check so that the error names the dangerous property rather than a
    generic "does not match" message.
    """
    if not isinstance(text, str):
        raise VersionError(f"{what} must be a string, got {type(text).__name__}")
    if not text:
        raise VersionError(f"{what} is empty")
    shown = repr(text if len(text) <= 60 else text[:57] + "...")
    if len(text) > MAX_LENGTH:
        raise VersionError(f"{what} {shown} is longer than {MAX_LENGTH} characters ({len(text)})")
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            raise VersionError(f"{what} {shown} contains a control character ({ord(ch):#04x})")
    for ch in text:
        if ch.isspace():
            raise VersionError(f"{what} {shown} contains whitespace")
    for ch in text:
        if ch in _SHELL_METACHARACTERS:
            raise VersionError(f"{what} {shown} contains the shell metacharacter {ch!r}")
    if ".." in text:
        raise VersionError(f"{what} {shown} contains '..'")
    if text.startswith("-"):
        raise VersionError(f"{what} {shown} starts with '-'")
    for ch in text:
        if not (ch.isascii() and (ch.isalnum() or ch in "._+-")):
            raise VersionError(
                f"{what} {shown} contains {ch!r}; "
                "only ASCII letters, digits, '.', '_', '+' and '-' are allowed"
            )
    return text


def channel_for_minor(minor: int) -> str | None:
    """The release channel a minor number denotes (0 alpha, 1 beta, 2 stable, 3 lts), else None."""
    return RELEASE_CHANNELS.get(minor)


@dataclass(frozen=True)
class NightlyId:
    """A parsed ``nightly-YYYYMMDD-hhmm[-INTERMEDIATE]`` build id."""

    time: dt.datetime
    intermediate: bool


def parse_build_id(build_id: str) -> NightlyId | None:
    """Validate a build id; return its nightly time for nightly ids, None for free suffixes.

    Nightly ids must be well-formed with a real UTC date and time: ``nightly-`` switches the scripts to
    the bincache binhost, so a mistyped nightly id must not silently become a "free" development suffix.
    """
    check_safe_string(build_id, "build id")
    if "+" in build_id:
        raise VersionError(f"build id {build_id!r} contains '+', which separates the build id in version.txt")
    if build_id.lower().startswith("nightly"):
        match = _NIGHTLY_RE.fullmatch(build_id)
        if not match:
            raise VersionError(
                f"nightly build id {build_id!r} must be 'nightly-YYYYMMDD-hhmm' optionally followed by "
                "'-INTERMEDIATE'"
            )
        try:
            when = dt.datetime.strptime(match["date"] + match["time"], "%Y%m%d%H%M").replace(tzinfo=dt.UTC)
        except ValueError:
            raise VersionError(
                f"nightly build id {build_id!r} does not name a real date and time (YYYYMMDD-hhmm, UTC)"
            ) from None
        return NightlyId(time=when, intermediate=bool(match["intermediate"]))
    if not _FREE_BUILD_ID_RE.fullmatch(build_id):
        raise VersionError(
            f"build id {build_id!r} must start and end with a letter or digit and contain only letters, "
            "digits, '.', '_' and '-'"
        )
    if build_id.endswith(".lock"):
        raise VersionError(f"build id {build_id!r} ends with '.lock', which git refuses in ref names")
    return None


@dataclass(frozen=True)
class FlatcarVersion:
    """One Flatcar version: numbers, optional channel (tag prefix) and optional build id.

    Instances are always valid: the constructor checks the channel, the channel/minor agreement for
    release channels, and the build id.
    """

    major: int
    minor: int
    patch: int
    build_id: str = ""
    channel: str | None = None

    def __post_init__(self) -> None:
        for name in ("major", "minor", "patch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise VersionError(f"{name} version number must be a non-negative integer, got {value!r}")
        if self.channel is not None:
            if self.channel not in CHANNELS:
                raise VersionError(f"channel {self.channel!r} is not one of {', '.join(CHANNELS)}")
            expected = channel_for_minor(self.minor)
            if self.channel != "main" and self.channel != expected:
                denoted = f"denotes {expected}" if expected else "denotes no release channel"
                raise VersionError(
                    f"channel {self.channel!r} does not agree with minor number {self.minor} of "
                    f"{self.vernum} ({denoted}; 0 alpha, 1 beta, 2 stable, 3 lts)"
                )
        if self.build_id:
            parse_build_id(self.build_id)
        check_safe_string(self.tag if self.channel else self.versionfile_version, "version")

    # -- derived forms -------------------------------------------------------------------------------
    @property
    def vernum(self) -> str:
        """Plain version number ``MMMM.m.p`` (``FLATCAR_VERSION_ID``)."""
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def versionfile_version(self) -> str:
        """version.txt form: ``4593.2.5+nightly-20260821-2100`` (``FLATCAR_VERSION``)."""
        return f"{self.vernum}+{self.build_id}" if self.build_id else self.vernum

    @property
    def docker_version(self) -> str:
        """Docker-safe form (``vernum_to_docker_image_version``): ``+`` becomes ``-``."""
        return self.versionfile_version.replace("+", "-")

    @property
    def tag(self) -> str:
        """Tag name ``<channel>-MMMM.m.p[-BUILD_ID]``; needs a channel."""
        if self.channel is None:
            raise VersionError(f"version {self.versionfile_version} has no channel, so it has no tag name")
        return (
            f"{self.channel}-{self.vernum}-{self.build_id}"
            if self.build_id
            else f"{self.channel}-{self.vernum}"
        )

    @property
    def is_official(self) -> bool:
        """Official (production) builds carry no build id (the scripts' ``is_official``)."""
        return not self.build_id

    @property
    def nightly(self) -> NightlyId | None:
        return parse_build_id(self.build_id) if self.build_id else None

    @property
    def is_nightly(self) -> bool:
        """A final nightly (``-nightly-YYYYMMDD-hhmm``, not INTERMEDIATE)."""
        nightly = self.nightly
        return nightly is not None and not nightly.intermediate

    @property
    def is_intermediate(self) -> bool:
        nightly = self.nightly
        return nightly is not None and nightly.intermediate

    @property
    def minor_channel(self) -> str | None:
        """Release channel denoted by the minor number, independent of the tag prefix."""
        return channel_for_minor(self.minor)

    @property
    def image_channel(self) -> str:
        """The group ``image.sh`` builds for (``channel_from_version``): ``main`` becomes ``developer``."""
        return self.channel if self.channel in RELEASE_CHANNELS.values() else "developer"

    def with_channel(self, channel: str | None) -> FlatcarVersion:
        return replace(self, channel=channel)

    def with_build_id(self, build_id: str) -> FlatcarVersion:
        return replace(self, build_id=build_id)

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly description (CLI output, XCom)."""
        nightly = self.nightly
        return {
            "tag": self.tag if self.channel else None,
            "channel": self.channel,
            "minor_channel": self.minor_channel,
            "version_id": self.vernum,
            "build_id": self.build_id,
            "versionfile_version": self.versionfile_version,
            "docker_version": self.docker_version,
            "official": self.is_official,
            "nightly": bool(nightly),
            "intermediate": bool(nightly and nightly.intermediate),
            "nightly_time": nightly.time.isoformat() if nightly else None,
        }

    def __str__(self) -> str:
        return self.tag if self.channel else self.versionfile_version


def _numbers(match: re.Match[str]) -> tuple[int, int, int]:
    return int(match["major"]), int(match["minor"]), int(match["patch"])


def parse_tag(text: str) -> FlatcarVersion:
    """Parse a channel-prefixed tag name ``(main|alpha|beta|stable|lts)-MMMM.m.p[-BUILD_ID]``."""
    check_safe_string(text, "version tag")
    match = _TAG_RE.fullmatch(text)
    if not match:
        raise VersionError(
            f"version tag {text!r} must be <channel>-MMMM.m.p[-BUILD_ID] with channel one of "
            f"{', '.join(CHANNELS)} and numbers without leading zeros"
        )
    if match["channel"] not in CHANNELS:
        raise VersionError(
            f"version tag {text!r}: channel {match['channel']!r} is not one of {', '.join(CHANNELS)}"
        )
    major, minor, patch = _numbers(match)
    return FlatcarVersion(major, minor, patch, match["build"] or "", match["channel"])


def parse_version_number(text: str) -> FlatcarVersion:
    """Parse ``MMMM.m.p`` optionally followed by ``+BUILD_ID`` or ``-BUILD_ID`` (no channel)."""
    check_safe_string(text, "version number")
    match = _NUMBER_FORM_RE.fullmatch(text)
    if not match:
        raise VersionError(
            f"version number {text!r} must be MMMM.m.p (three dot-separated numbers without leading zeros), "
            "optionally followed by '+' or '-' and a build id"
        )
    major, minor, patch = _numbers(match)
    return FlatcarVersion(major, minor, patch, match["build"] or "")


def parse_any(text: str) -> FlatcarVersion:
    """Parse a tag name or a version number, whichever ``text`` is (the scripts accept both)."""
    check_safe_string(text, "version")
    return parse_tag(text) if text[:1].isalpha() else parse_version_number(text)
