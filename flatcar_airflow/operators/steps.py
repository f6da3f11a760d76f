"""One operator per Flatcar build step. Each is :class:`FlatcarStepOperator` with its step fixed; the
docstrings state INPUTS and OUTPUTS like the scripts' headers (paths relative to the build cache root;
VER/SDKVER in version.txt form, DV in docker form)."""

from __future__ import annotations

from collections.abc import Sequence

from .step import FlatcarStepOperator

__all__ = [
    "ImageChangesOperator",
    "ImageOperator",
    "PackagesOperator",
    "PackagesTagOperator",
    "PushPackagesOperator",
    "SdkBootstrapOperator",
    "SdkContainerOperator",
    "TestsOperator",
    "VendorImagesOperator",
]


class SdkBootstrapOperator(FlatcarStepOperator):
    """``sdk_bootstrap SEED TAG`` (ci-automation/sdk_bootstrap.sh): a new SDK from a seed SDK.

    INPUTS:  the seed SDK (container ghcr.io/flatcar/flatcar-sdk-all:<seed> and its tarball, from the
             registry or the release mirror); the version tag (a full build: SDK version = OS version).
    OUTPUTS: sdk/amd64/<SDKVER>/flatcar-sdk-amd64-<SDKVER>.tar.bz2 (+ .DIGESTS), build-logs/<SDKVER>/.
    """

    step_name = "sdk_bootstrap"

    def __init__(self, *, seed_version: str, **kwargs) -> None:
        options = {**kwargs.pop("options", {}), "seed_version": seed_version}
        super().__init__(options=options, **kwargs)


class SdkContainerOperator(FlatcarStepOperator):
    """``sdk_container_build`` (ci-automation/sdk_container.sh): SDK containers from the SDK tarball.

    INPUTS:  sdk/amd64/<SDKVER>/flatcar-sdk-amd64-<SDKVER>.tar.bz2.
    OUTPUTS: containers/<DV>/flatcar-sdk-{all,amd64,arm64}-<DV>.tar.zst (+ .id, .DIGESTS).
    """

    step_name = "sdk_container"


class PackagesTagOperator(FlatcarStepOperator):
    """``packages_tag TAG`` (ci-automation/packages-tag.sh): the OS build's version tag.

    INPUTS:  the version tag (created by the tag task; the step reuses it) and the branch's SDK version.
    OUTPUTS: the tag (reused); ``./skip-build`` when nothing changed and the images exist, which stops the
             downstream steps as skipped.
    """

    step_name = "packages_tag"


class PackagesOperator(FlatcarStepOperator):
    """``packages_build ARCH`` (ci-automation/packages.sh): the OS image's binary packages.

    INPUTS:  the SDK container for ARCH (registry for a released SDK;
             containers/<SDK DV>/flatcar-sdk-<arch>-<SDK DV>.tar.zst for a development SDK).
    OUTPUTS: containers/<DV>/flatcar-packages-<arch>-<DV>.tar.zst (+ .id, .DIGESTS),
             build-logs/<SDKVER>/packages-<arch>-logs-<date>.tar.xz.
    """

    step_name = "packages"


class PushPackagesOperator(FlatcarStepOperator):
    """``push_packages ARCH`` (ci-automation/push_pkgs.sh): binary packages published to the cache.

    INPUTS:  containers/<DV>/flatcar-packages-<arch>-<DV>.tar.zst.
    OUTPUTS: boards/<arch>-usr/<VER>/pkgs/ (a binhost for later builds).
    """

    step_name = "push_packages"


class ImageOperator(FlatcarStepOperator):
    """``image_build ARCH`` (ci-automation/image.sh): the generic OS image.

    INPUTS:  containers/<DV>/flatcar-packages-<arch>-<DV>.tar.zst.
    OUTPUTS: images/<arch>/<VER>/: flatcar_production_image.bin.bz2, the update payload, the developer
             container, sysexts, version.txt, … (every file the step uploaded is recorded).
    """

    step_name = "image"


class VendorImagesOperator(FlatcarStepOperator):
    """``vm_build ARCH FORMAT...`` (ci-automation/vms.sh): vendor images from the generic image.

    ``vmware*`` and ``ami*``/``aws*`` are the scripts' aliases (vmware, vmware_ova, vmware_raw; ami,
    ami_vmdk); ``qemu`` and ``qemu_uefi_secure`` are skipped by the scripts.

    INPUTS:  containers/<DV>/flatcar-packages-<arch>-<DV>.tar.zst,
             images/<arch>/<VER>/flatcar_production_image.bin.bz2.
    OUTPUTS: images/<arch>/<VER>/flatcar_production_<format>_… for every format built.
    """

    step_name = "vms"

    def __init__(self, *, formats: Sequence[str] | str, **kwargs) -> None:
        options = {**kwargs.pop("options", {}), "formats": formats}
        super().__init__(options=options, **kwargs)


class TestsOperator(FlatcarStepOperator):
    """``test_run ARCH VENDOR [TESTS...]`` (ci-automation/test.sh): one vendor's tests.

    The step re-runs its own flaky tests (MAX_RETRIES); its merged TAP summary is logged and returned
    (XCom key ``tests`` too, even when tests failed).

    INPUTS:  images/<arch>/<VER>/ (the vendor image; the generic image is checked), upstream records.
    OUTPUTS: testing/<VER>/<arch>/<vendor>/results-<vendor>[-detailed].{tap,md}, kola logs.
    """

    step_name = "test"

    def __init__(self, *, vendor: str, tests: Sequence[str] = (), **kwargs) -> None:
        options = {**kwargs.pop("options", {}), "vendor": vendor, "tests": list(tests)}
        super().__init__(options=options, **kwargs)


class ImageChangesOperator(FlatcarStepOperator):
    """``image_changes ARCH last-release|last-nightly`` (ci-automation/image_changes.sh): a report.

    INPUTS:  images/<arch>/<VER>/ of this build and of the one compared to.
    OUTPUTS: the report, in the task log (the scripts do not store it).
    """

    step_name = "image_changes"

    def __init__(self, *, compare_to: str = "last-nightly", **kwargs) -> None:
        options = {**kwargs.pop("options", {}), "compare_to": compare_to}
        super().__init__(options=options, **kwargs)
