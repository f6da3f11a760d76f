"""Airflow operators: one per Flatcar build step (all are FlatcarStepOperator with a fixed step), and
the branch lock that opens every pipeline."""

from .branch_lock import BranchLockSensor
from .preflight import PreflightOperator
from .step import FlatcarStepOperator
from .steps import (
    ImageChangesOperator,
    ImageOperator,
    PackagesOperator,
    PackagesTagOperator,
    PushPackagesOperator,
    ReleaseOperator,
    SbsignImageOperator,
    SdkBootstrapOperator,
    SdkContainerOperator,
    TestsOperator,
    VendorImagesOperator,
)

__all__ = [
    "BranchLockSensor",
    "FlatcarStepOperator",
    "ImageChangesOperator",
    "ImageOperator",
    "PackagesOperator",
    "PackagesTagOperator",
    "PreflightOperator",
    "PushPackagesOperator",
    "ReleaseOperator",
    "SbsignImageOperator",
    "SdkBootstrapOperator",
    "SdkContainerOperator",
    "TestsOperator",
    "VendorImagesOperator",
]
