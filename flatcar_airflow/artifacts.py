"""Artifact references: small JSON records of what a step put into the build cache, and where.

The build cache layout is the scripts' (reference §4); paths here are relative to the cache root, which
is ``BUILDCACHE_PATH_PREFIX`` for writes (rsync over ssh) and the HTTP(S) base URL for reads::

    sdk/<arch>/<SDKVER>/flatcar-sdk-<arch>-<SDKVER>.tar.bz2
    containers/<DV>/flatcar-{sdk-all,sdk-<arch>,packages-<arch>}-<DV>.tar.zst (+ .id)
    boards/<arch>-usr/<VER>/pkgs/
    images/<arch>/<VER>/<file>
    testing/<VER>/<arch>/<image>/results-<image>[-detailed].{tap,md}

``<VER>``/``<SDKVER>`` are version.txt forms (with ``+``), ``<DV>`` the docker form (``+`` → ``-``).
Records travel through XCom, so they are plain dicts of strings and numbers (no bytes, no paths).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .versions import FlatcarVersion

__all__ = [
    "ArtifactRef",
    "binpkgs",
    "container",
    "generic_image",
    "image_file",
    "sdk_tarball",
    "test_results",
]

#: The file every image build produces; vms, tests and image_changes read it.
GENERIC_IMAGE = "flatcar_production_image.bin.bz2"


@dataclass(frozen=True)
class ArtifactRef:
    """One artifact in the build cache."""

    kind: str
    path: str
    version: str
    arch: str | None = None
    url: str | None = None
    size: int | None = None
    image_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {key: value for key, value in asdict(self).items() if value not in (None, {})}

    @classmethod
    def from_dict(cls, data: dict) -> ArtifactRef:
        if not isinstance(data, dict) or "kind" not in data or "path" not in data:
            raise ValueError(f"not an artifact record: {data!r}")
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in known})

    def with_details(self, *, url: str | None = None, size: int | None = None, image_id: str | None = None):
        return ArtifactRef(
            self.kind,
            self.path,
            self.version,
            self.arch,
            url or self.url,
            self.size if size is None else size,
            image_id or self.image_id,
            dict(self.extra),
        )


def sdk_tarball(sdk: FlatcarVersion, arch: str = "amd64") -> ArtifactRef:
    ver = sdk.versionfile_version
    return ArtifactRef("sdk-tarball", f"sdk/{arch}/{ver}/flatcar-sdk-{arch}-{ver}.tar.bz2", ver, arch)


def container(name: str, version: FlatcarVersion, arch: str | None = None) -> ArtifactRef:
    """A container image saved to the cache, e.g. ``flatcar-packages-amd64`` or ``flatcar-sdk-all``."""
    dv = version.docker_version
    return ArtifactRef(
        "container",
        f"containers/{dv}/{name}-{dv}.tar.zst",
        version.versionfile_version,
        arch,
        extra={"image": name, "tag": dv, "id_path": f"containers/{dv}/{name}-{dv}.id"},
    )


def binpkgs(version: FlatcarVersion, arch: str) -> ArtifactRef:
    """The binary packages pushed for a build; portage's ``Packages`` index stands for the directory."""
    ver = version.versionfile_version
    return ArtifactRef("binpkgs", f"boards/{arch}-usr/{ver}/pkgs/Packages", ver, arch)


def image_file(
    version: FlatcarVersion,
    arch: str,
    name: str,
    kind: str = "image-file",
    *,
    size: int | None = None,
    extra: dict[str, str] | None = None,
) -> ArtifactRef:
    ver = version.versionfile_version
    return ArtifactRef(kind, f"images/{arch}/{ver}/{name}", ver, arch, size=size, extra=dict(extra or {}))


def generic_image(version: FlatcarVersion, arch: str) -> ArtifactRef:
    return image_file(version, arch, GENERIC_IMAGE, kind="generic-image")


def test_results(version: FlatcarVersion, arch: str, image: str, detailed: bool = False) -> ArtifactRef:
    ver = version.versionfile_version
    suffix = "-detailed" if detailed else ""
    return ArtifactRef(
        "test-results",
        f"testing/{ver}/{arch}/{image}/results-{image}{suffix}.tap",
        ver,
        arch,
        extra={"vendor": image},
    )
