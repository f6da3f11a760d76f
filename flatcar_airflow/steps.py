"""The build steps: which scripts function each runs, with which arguments, reading and writing what.

One class per step, mirroring one ``ci-automation/<step>.sh`` each. A step knows its function's argument
list, the artifacts that must be in the build cache before it starts (its PREREQUISITES), and the
artifacts it must have written when it ends (its OUTPUT), for one :class:`BuildContext`: the version tag,
what version.txt at that tag says, and the architecture.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from .artifacts import ArtifactRef, binpkgs, container, generic_image, image_file, sdk_tarball, test_results
from .versionfile import VersionFile
from .versions import FlatcarVersion, check_safe_string, parse_any, parse_tag

__all__ = [
    "AMI_LISTS",
    "ARCHES",
    "RELEASE_OFFERS",
    "RELEASE_UNSET",
    "STEPS",
    "BuildContext",
    "Step",
    "expand_formats",
    "tap_summary",
]

ARCHES = ("amd64", "arm64")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
_PATTERN = re.compile(r"^[A-Za-z0-9*?._\[\]-]+$")
#: vms.sh builds these aliases as several formats and skips two names (reference §5).
_SKIPPED_FORMATS = ("qemu", "qemu_uefi_secure")


@dataclass(frozen=True)
class BuildContext:
    """One build of one version: the tag, version.txt at the tag, and (for per-arch steps) the arch."""

    tag: FlatcarVersion
    versionfile: VersionFile
    arch: str | None = None

    @classmethod
    def from_build(cls, build: Mapping, arch: str | None = None) -> BuildContext:
        """From the tag task's XCom (``{"tag": …, "versionfile": {FLATCAR_VERSION: …, …}}``)."""
        if not isinstance(build, Mapping) or "tag" not in build or "versionfile" not in build:
            raise ValueError(
                f"build must be the tag task's result with 'tag' and 'versionfile', got {build!r}"
            )
        vf = build["versionfile"]
        versionfile = VersionFile.create(vf["FLATCAR_SDK_VERSION"], vf["FLATCAR_VERSION"])
        if arch is not None and arch not in ARCHES:
            raise ValueError(f"arch {arch!r} is not one of {', '.join(ARCHES)}")
        return cls(parse_tag(build["tag"]), versionfile, arch)

    @property
    def os(self) -> FlatcarVersion:
        return self.versionfile.os

    @property
    def sdk(self) -> FlatcarVersion:
        return self.versionfile.sdk

    def require_arch(self) -> str:
        if self.arch is None:
            raise ValueError("this step builds for one architecture: pass arch")
        return self.arch


def expand_formats(formats: Sequence[str]) -> list[str]:
    """The formats vms.sh actually builds for a list: aliases expanded, skipped names dropped."""
    built: list[str] = []
    for fmt in formats:
        if fmt.startswith("vmware"):
            names = ["vmware", "vmware_ova", "vmware_raw"]
        elif fmt.startswith(("ami", "aws")):
            names = ["ami", "ami_vmdk"]
        else:
            names = [fmt]
        built += [name for name in names if name not in _SKIPPED_FORMATS and name not in built]
    return built


def _names(values: Sequence[str], what: str) -> list[str]:
    if isinstance(values, str):
        values = values.split()
    result = []
    for value in values:
        check_safe_string(value, what)
        if not _NAME.fullmatch(value):
            raise ValueError(f"{what} {value!r} must be lower-case letters, digits and '_'")
        result.append(value)
    return result


#: The merged TAP report's first line (tapfile_helper_lib.sh): ``ok - Version: V, Architecture: A``.
_REPORT_HEADER = re.compile(r"Version: \S+, Architecture: \S+")


def tap_summary(text: str) -> dict[str, object]:
    """Counts and failed test names of a TAP report (the test step's merged summary).

    ``flaky`` counts the tests that are ``ok`` but whose diagnostics list a ``Failed:`` run: the step
    re-ran them (MAX_RETRIES) and they passed on a re-run (``passed`` includes them).
    """
    from tap.parser import Parser  # only the test tasks parse TAP: not imported when DAG files are parsed

    parser = Parser()
    passed = failed = skipped = flaky = 0
    failures: list[str] = []
    flaky_names: list[str] = []
    last_ok: str | None = None  # the name of the ok test whose diagnostics follow
    for raw in text.splitlines():
        line = parser.parse_line(raw)
        if line.category != "test":
            if last_ok is not None and raw.lstrip().startswith("Failed:"):
                flaky += 1
                flaky_names.append(last_ok)
                last_ok = None
            continue
        name = line.description.removeprefix("-").strip() or f"test {line.number}"
        last_ok = None
        if _REPORT_HEADER.match(name):
            continue  # the merged report's first line names the build, it is not a test
        if line.skip:
            skipped += 1
        elif line.ok:
            passed += 1
            last_ok = name
        else:
            failed += 1
            failures.append(name)
    return {
        "passed": passed,
        "failed": failed,
        "skipped": skipped,
        "flaky": flaky,
        "failures": failures[:50],
        "flaky_tests": flaky_names[:50],
    }


class Step:
    """A ci-automation step. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str]
    script: ClassVar[str]
    function: ClassVar[str]
    per_arch: ClassVar[bool] = True
    #: A step whose standard output is its result (a report the scripts print and do not store): the
    #: operator keeps that output and stores it in the build cache as this artifact (kind ``report``).
    report: ClassVar[str | None] = None

    def validate(self, ctx: BuildContext, options: Mapping) -> None:
        """Check options before any side effect (raise ValueError naming the problem)."""
        if self.per_arch:
            ctx.require_arch()

    def args(self, ctx: BuildContext, options: Mapping) -> list[str]:
        return [ctx.require_arch()] if self.per_arch else []

    def inputs(self, ctx: BuildContext, options: Mapping) -> list[ArtifactRef]:
        return []

    def outputs(self, ctx: BuildContext, options: Mapping) -> list[ArtifactRef]:
        return []

    def listed_outputs(
        self, ctx: BuildContext, options: Mapping, images: list[tuple[str, int]]
    ) -> list[ArtifactRef]:
        """Outputs known only after the step, from the files it left in its work tree's images/latest."""
        return []

    def report_artifact(self, ctx: BuildContext) -> ArtifactRef:
        """Where the report of a step with :attr:`report` goes in the build cache."""
        raise NotImplementedError(f"{self.name} prints no report")

    def _packages(self, ctx: BuildContext) -> ArtifactRef:
        return container(f"flatcar-packages-{ctx.require_arch()}", ctx.os, ctx.arch)


class SdkBootstrap(Step):
    name = "sdk_bootstrap"
    script = "ci-automation/sdk_bootstrap.sh"
    function = "sdk_bootstrap"
    per_arch = False

    def validate(self, ctx, options):
        seed = options.get("seed_version")
        if not seed:
            raise ValueError("sdk_bootstrap needs seed_version, the SDK to bootstrap from")
        parse_any(seed)
        if not ctx.versionfile.is_full_build:
            raise ValueError(f"{ctx.tag} is not a full build: version.txt's SDK and OS versions differ")

    def args(self, ctx, options):
        return [str(options["seed_version"]), ctx.tag.tag]

    def outputs(self, ctx, options):
        return [sdk_tarball(ctx.sdk, "amd64")]


class SdkContainer(Step):
    name = "sdk_container"
    script = "ci-automation/sdk_container.sh"
    function = "sdk_container_build"
    per_arch = False

    def inputs(self, ctx, options):
        return [sdk_tarball(ctx.sdk, "amd64")]

    def outputs(self, ctx, options):
        return [container(f"flatcar-sdk-{flavour}", ctx.sdk) for flavour in ("all", "amd64", "arm64")]


class PackagesTag(Step):
    name = "packages_tag"
    script = "ci-automation/packages-tag.sh"
    function = "packages_tag"
    per_arch = False

    def args(self, ctx, options):
        return [ctx.tag.tag]


class Packages(Step):
    name = "packages"
    script = "ci-automation/packages.sh"
    function = "packages_build"

    def inputs(self, ctx, options):
        # A released SDK comes from the registry or the release mirror; only a development SDK (one with a
        # build id, e.g. a nightly's) must be in the build cache.
        if ctx.sdk.is_official:
            return []
        return [container(f"flatcar-sdk-{ctx.require_arch()}", ctx.sdk, ctx.arch)]

    def outputs(self, ctx, options):
        return [self._packages(ctx)]


class PushPackages(Step):
    name = "push_packages"
    script = "ci-automation/push_pkgs.sh"
    function = "push_packages"

    def inputs(self, ctx, options):
        return [self._packages(ctx)]

    def outputs(self, ctx, options):
        return [binpkgs(ctx.os, ctx.require_arch())]


class Image(Step):
    name = "image"
    script = "ci-automation/image.sh"
    function = "image_build"

    def inputs(self, ctx, options):
        return [self._packages(ctx)]

    def outputs(self, ctx, options):
        return [generic_image(ctx.os, ctx.require_arch())]

    def listed_outputs(self, ctx, options, images):
        return [
            image_file(ctx.os, ctx.require_arch(), name, size=size)
            for name, size in images
            if not name.endswith((".DIGESTS", ".asc", ".sig"))
        ]


class SbsignImage(Step):
    """Secure Boot signing of the generic image: the signed image, kernel and GRUB replace the unsigned
    files in the image's cache directory (the vendor images and tests that follow use them)."""

    name = "sbsign_image"
    script = "ci-automation/sbsign_image.sh"
    function = "sbsign_image"
    #: What the signing writes next to the image, besides the image itself (the GRUB file is new: its
    #: presence says the image in the cache is the signed one).
    SIGNED_FILES: ClassVar[tuple[str, ...]] = (
        "flatcar_production_image.vmlinuz",
        "flatcar_production_image.grub",
    )

    def inputs(self, ctx, options):
        return [generic_image(ctx.os, ctx.require_arch())]

    def outputs(self, ctx, options):
        arch = ctx.require_arch()
        return [generic_image(ctx.os, arch)] + [
            image_file(ctx.os, arch, name, "secure-boot") for name in self.SIGNED_FILES
        ]


#: Cloud offers ``release_build`` publishes, and the variables that carry each one's credentials
#: (ci-automation/release.sh's OPTIONAL INPUT).
RELEASE_OFFERS: dict[str, tuple[str, ...]] = {
    "aws": (
        "AWS_CREDENTIALS",
        "AWS_MARKETPLACE_CREDENTIALS",
        "AWS_MARKETPLACE_ARN",
        "AWS_CLOUDFORMATION_CREDENTIALS",
    ),
    "gce": ("GCP_JSON_KEY", "GOOGLE_RELEASE_CREDENTIALS"),
}
#: Variables release.sh reads (under ``set -u``) that no offer of ours sets: given empty, which the
#: script reads as "not configured" (no bucket copy, no SDK push).
RELEASE_UNSET: tuple[str, ...] = ("RCLONE_CONFIGURATION_FILE", "REGISTRY_USERNAME", "REGISTRY_PASSWORD")
#: The files release_build pushes next to the images for AWS (the AMI lists).
AMI_LISTS = ("flatcar_production_ami_all.json", "flatcar_production_ami_hvm.txt")


class Release(Step):
    """``release_build``: publish a tested build from the cache to the cloud offers (mantle's plume)."""

    name = "release"
    script = "ci-automation/release.sh"
    function = "release_build"
    per_arch = False

    def validate(self, ctx, options):
        offers = options.get("offers")
        if not offers or any(offer not in RELEASE_OFFERS for offer in offers):
            raise ValueError(f"release needs offers among {', '.join(RELEASE_OFFERS)}, got {offers!r}")
        if not options.get("arches") or any(arch not in ARCHES for arch in options["arches"]):
            raise ValueError(f"release needs the build's arches, got {options.get('arches')!r}")

    def inputs(self, ctx, options):
        return [generic_image(ctx.os, arch) for arch in options["arches"]]

    def outputs(self, ctx, options):
        if "aws" not in options["offers"]:
            return []
        return [image_file(ctx.os, arch, name, "release") for arch in options["arches"] for name in AMI_LISTS]


class VendorImages(Step):
    name = "vms"
    script = "ci-automation/vms.sh"
    function = "vm_build"

    def validate(self, ctx, options):
        super().validate(ctx, options)
        if not _names(options.get("formats") or [], "image format"):
            raise ValueError("vms needs at least one image format")

    def args(self, ctx, options):
        return [ctx.require_arch(), *_names(options["formats"], "image format")]

    def inputs(self, ctx, options):
        return [self._packages(ctx), generic_image(ctx.os, ctx.require_arch())]

    def listed_outputs(self, ctx, options, images):
        records = []
        sizes = dict(images)
        for fmt in expand_formats(_names(options["formats"], "image format")):
            produced = [
                name
                for name in sizes
                if name.startswith((f"flatcar_production_{fmt}_", f"flatcar_production_{fmt}."))
                and not name.endswith((".DIGESTS", ".asc", ".sig"))
            ]
            if not produced:
                raise ValueError(f"vms left no file for format {fmt} in images/latest")
            records += [
                image_file(
                    ctx.os, ctx.require_arch(), name, "vendor-image", size=sizes[name], extra={"format": fmt}
                )
                for name in produced
            ]
        return records


class Tests(Step):
    name = "test"
    script = "ci-automation/test.sh"
    function = "test_run"

    def validate(self, ctx, options):
        super().validate(ctx, options)
        _names([options.get("vendor") or ""], "test vendor")
        for pattern in options.get("tests") or []:
            if not _PATTERN.fullmatch(pattern):
                raise ValueError(
                    f"test pattern {pattern!r} may contain only letters, digits, '.', '_', '-', '*', '?'"
                )

    def args(self, ctx, options):
        return [ctx.require_arch(), options["vendor"], *(options.get("tests") or [])]

    def inputs(self, ctx, options):
        return [generic_image(ctx.os, ctx.require_arch())]

    def outputs(self, ctx, options):
        return [
            test_results(ctx.os, ctx.require_arch(), options["vendor"]),
            test_results(ctx.os, ctx.require_arch(), options["vendor"], detailed=True),
        ]


class ImageChanges(Step):
    name = "image_changes"
    script = "ci-automation/image_changes.sh"
    function = "image_changes"
    report = "flatcar-airflow-image-changes.txt"

    def validate(self, ctx, options):
        super().validate(ctx, options)
        if options.get("compare_to") not in ("last-release", "last-nightly"):
            raise ValueError("image_changes compares to 'last-release' or 'last-nightly'")

    def args(self, ctx, options):
        return [ctx.require_arch(), options["compare_to"]]

    def inputs(self, ctx, options):
        return [generic_image(ctx.os, ctx.require_arch())]

    def report_artifact(self, ctx: BuildContext) -> ArtifactRef:
        """``images/<arch>/<VER>/flatcar-airflow-image-changes.txt``, next to the images compared."""
        return image_file(ctx.os, ctx.require_arch(), self.report, kind="report")


STEPS: dict[str, Step] = {
    step.name: step
    for step in (
        SdkBootstrap(),
        SdkContainer(),
        PackagesTag(),
        Packages(),
        PushPackages(),
        Image(),
        SbsignImage(),
        VendorImages(),
        Tests(),
        ImageChanges(),
        Release(),
    )
}
