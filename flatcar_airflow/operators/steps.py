"""One operator per Flatcar build step. Each is :class:`FlatcarStepOperator` with its step fixed; the
docstrings state INPUTS and OUTPUTS like the scripts' headers (paths relative to the build cache root;
VER/SDKVER in version.txt form, DV in docker form)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from ..steps import RELEASE_OFFERS, RELEASE_UNSET
from .step import FlatcarStepOperator

__all__ = [
    "ImageChangesOperator",
    "ImageOperator",
    "PackagesOperator",
    "PackagesTagOperator",
    "PushPackagesOperator",
    "ReleaseOperator",
    "SbsignImageOperator",
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


class SbsignImageOperator(FlatcarStepOperator):
    """``sbsign_image ARCH`` (ci-automation/sbsign_image.sh): the generic image signed for Secure Boot.

    The key material comes from the connection ``sbsign_conn_id``: password = the PEM private key, extra
    ``cert`` = the PEM certificate. They reach the step as the private job files the wrapper names in
    ``SBSIGN_KEY`` and ``SBSIGN_CERT``; the key is masked (whole and line by line) and is in no XCom,
    rendered field or manifest (only the connection id is a field).

    INPUTS:  images/<arch>/<VER>/flatcar_production_image.bin.bz2, the SDK container for ARCH.
    OUTPUTS: images/<arch>/<VER>/: flatcar_production_image.bin.bz2 (signed, replacing the unsigned one),
             flatcar_production_image.vmlinuz and .grub (the signed kernel and GRUB), their DIGESTS.
    """

    step_name = "sbsign_image"

    def __init__(self, *, sbsign_conn_id: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sbsign_conn_id = sbsign_conn_id

    def _secret_env(self, files: dict[str, bytes]) -> dict[str, str]:
        from airflow.sdk.log import mask_secret

        secret_env = super()._secret_env(files)
        conn = BaseHook.get_connection(self.sbsign_conn_id)
        cert = conn.extra_dejson.get("cert")
        if not conn.password or not isinstance(cert, str) or not cert.strip():
            raise AirflowFailException(
                f"Secure Boot connection {self.sbsign_conn_id!r} needs password (the PEM key) and extra "
                "'cert' (the PEM certificate)"
            )
        mask_secret(conn.password)
        files["secrets/sbsign.key"] = conn.password.encode()
        files["secrets/sbsign.crt"] = cert.encode()
        return secret_env


class ReleaseOperator(FlatcarStepOperator):
    """``release_build`` (ci-automation/release.sh): a tested build published to the cloud offers.

    ``build`` is the release's checked plan (flatcar_airflow/release/): the tag task's fields plus
    ``offers``, ``arches`` and ``dry_run``. A dry run skips this task: nothing is published. The
    credentials of each chosen offer come from its connection (``offer_conn_ids``; extra = a JSON object
    of the offer's variables, :data:`~flatcar_airflow.steps.RELEASE_OFFERS`), masked, and reach the step
    as environment and in the work tree's ``sdk_container/.env`` (where release.sh and its mantle
    container read them); every other credential variable of the script is given empty.

    INPUTS:  images/<arch>/<VER>/ of every arch of the build (the vendor images plume publishes).
    OUTPUTS: the cloud images (plume); for aws, images/<arch>/<VER>/flatcar_production_ami_{all.json,hvm.txt}.
    """

    step_name = "release"

    def __init__(self, *, offer_conn_ids: Mapping[str, str | None], **kwargs) -> None:
        super().__init__(**kwargs)
        self.offer_conn_ids = dict(offer_conn_ids)

    def execute(self, context) -> dict:
        plan = self.build if isinstance(self.build, Mapping) else {}
        if plan.get("dry_run"):
            raise AirflowSkipException(
                f"dry run: {plan.get('tag')} would be published to {', '.join(plan.get('offers') or [])}"
            )
        self.options = {**self.options, "offers": plan.get("offers"), "arches": plan.get("arches")}
        return super().execute(context)

    def _secret_env(self, files: dict[str, bytes]) -> dict[str, str]:
        from airflow.sdk.log import mask_secret

        secret_env = super()._secret_env(files)
        chosen = list(self.options.get("offers") or [])
        for offer, names in RELEASE_OFFERS.items():
            values: dict[str, Any] = {}
            if offer in chosen:
                conn_id = self.offer_conn_ids.get(offer)
                if not conn_id:
                    raise AirflowFailException(f"offer {offer}: no connection configured (release.offers)")
                values = dict(BaseHook.get_connection(conn_id).extra_dejson)
                for value in values.values():
                    mask_secret(str(value))
                unknown = sorted(set(values) - set(names))
                missing = [name for name in names if not values.get(name)]
                if unknown or missing:
                    raise AirflowFailException(
                        f"offer {offer}: connection {conn_id!r} must give {', '.join(names)}"
                        + (f"; missing {', '.join(missing)}" if missing else "")
                        + (f"; unknown {', '.join(name[:40] for name in unknown)}" if unknown else "")
                    )
            for name in names:
                secret_env[name] = str(values.get(name, ""))
        for name in RELEASE_UNSET:
            secret_env.setdefault(name, "")
        return secret_env

    def _sdk_env_names(self, secret_env: Mapping[str, str]) -> list[str]:
        names = [name for offer in RELEASE_OFFERS.values() for name in offer]
        return names + list(RELEASE_UNSET)


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
