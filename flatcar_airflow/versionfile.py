"""``sdk_container/.repo/manifests/version.txt``: read it, and write it byte-identical to the scripts.

The scripts' ``create_versionfile SDK_VERSION [OS_VERSION]`` (``sdk_lib/sdk_container_common.sh``) writes::

    FLATCAR_VERSION=<os vernum>[+<build id>]
    FLATCAR_VERSION_ID=<os vernum>
    FLATCAR_BUILD_ID="<build id>"
    FLATCAR_SDK_VERSION=<sdk vernum>[+<build id>]

Both arguments may carry a channel prefix and a ``-`` before the build id; the prefix is stripped and the
separator becomes ``+``. A full build (SDK bootstrap) passes one version, so SDK and OS versions are equal;
an OS-only build (packages tag) passes the SDK version recorded on the branch and the new OS version.
The tree we tag must equal the tree the scripts would tag, so :meth:`VersionFile.render` reproduces that
output to the byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from .versions import FlatcarVersion, VersionError, check_safe_string, parse_any, parse_version_number

__all__ = ["VERSIONFILE_PATH", "VersionFile"]

#: Path of version.txt inside the scripts repository.
VERSIONFILE_PATH = "sdk_container/.repo/manifests/version.txt"

_KEYS = ("FLATCAR_VERSION", "FLATCAR_VERSION_ID", "FLATCAR_BUILD_ID", "FLATCAR_SDK_VERSION")


@dataclass(frozen=True)
class VersionFile:
    """The four settings of version.txt, each already validated."""

    os: FlatcarVersion
    sdk: FlatcarVersion

    def __post_init__(self) -> None:
        if self.os.channel is not None or self.sdk.channel is not None:
            raise VersionError("version.txt records version numbers without a channel prefix")

    @classmethod
    def create(cls, sdk_version: str, os_version: str | None = None) -> VersionFile:
        """Mirror ``create_versionfile SDK_VERSION [OS_VERSION]``: OS version defaults to the SDK version."""
        sdk = parse_any(sdk_version).with_channel(None)
        os = parse_any(os_version).with_channel(None) if os_version is not None else sdk
        return cls(os=os, sdk=sdk)

    @classmethod
    def for_full_build(cls, version: FlatcarVersion) -> VersionFile:
        """What ``sdk_bootstrap`` records: the new SDK and the OS image share one version."""
        return cls.create(version.versionfile_version)

    @classmethod
    def for_os_build(cls, branch: VersionFile, version: FlatcarVersion) -> VersionFile:
        """What ``packages_tag`` records: the branch's SDK is kept, the OS version is new."""
        return cls(os=version.with_channel(None), sdk=branch.sdk)

    @classmethod
    def parse(cls, text: str | bytes) -> VersionFile:
        """Read a version.txt; the file is sourced by bash, so anything unexpected is an error."""
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as err:
                raise VersionError(f"{VERSIONFILE_PATH} is not UTF-8 text: {err}") from None
        values: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            key, sep, value = stripped.partition("=")
            if not sep or key not in _KEYS:
                raise VersionError(f"{VERSIONFILE_PATH} line {number}: expected one of {', '.join(_KEYS)}=…")
            if key in values:
                raise VersionError(f"{VERSIONFILE_PATH} line {number}: {key} is set twice")
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            if value or key != "FLATCAR_BUILD_ID":
                check_safe_string(value, f"{VERSIONFILE_PATH} line {number}: {key}")
            values[key] = value
        missing = [key for key in _KEYS if key not in values]
        if missing:
            raise VersionError(f"{VERSIONFILE_PATH} lacks {', '.join(missing)}")
        os = parse_version_number(values["FLATCAR_VERSION"])
        sdk = parse_version_number(values["FLATCAR_SDK_VERSION"])
        for key, version in (("FLATCAR_VERSION", os), ("FLATCAR_SDK_VERSION", sdk)):
            if values[key] != version.versionfile_version:
                raise VersionError(
                    f"{VERSIONFILE_PATH}: {key}={values[key]} must be written {version.versionfile_version} "
                    "('+' before the build id)"
                )
        if os.vernum != values["FLATCAR_VERSION_ID"] or os.build_id != values["FLATCAR_BUILD_ID"]:
            raise VersionError(
                f"{VERSIONFILE_PATH}: FLATCAR_VERSION={values['FLATCAR_VERSION']} does not agree with "
                f"FLATCAR_VERSION_ID={values['FLATCAR_VERSION_ID']} and "
                f'FLATCAR_BUILD_ID="{values["FLATCAR_BUILD_ID"]}"'
            )
        return cls(os=os, sdk=sdk)

    def render(self) -> str:
        """The file's text exactly as ``create_versionfile`` writes it."""
        return (
            f"FLATCAR_VERSION={self.os.versionfile_version}\n"
            f"FLATCAR_VERSION_ID={self.os.vernum}\n"
            f'FLATCAR_BUILD_ID="{self.os.build_id}"\n'
            f"FLATCAR_SDK_VERSION={self.sdk.versionfile_version}\n"
        )

    @property
    def is_full_build(self) -> bool:
        """SDK and OS share one version: the build that produced it bootstrapped its own SDK."""
        return self.os == self.sdk

    def to_dict(self) -> dict[str, str]:
        return {
            "FLATCAR_VERSION": self.os.versionfile_version,
            "FLATCAR_VERSION_ID": self.os.vernum,
            "FLATCAR_BUILD_ID": self.os.build_id,
            "FLATCAR_SDK_VERSION": self.sdk.versionfile_version,
        }
