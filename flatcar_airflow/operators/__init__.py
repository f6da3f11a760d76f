"""Airflow operators: one per Flatcar build step (all are FlatcarStepOperator with a fixed step)."""

from .step import FlatcarStepOperator
from .steps import (
    ImageChangesOperator,
    ImageOperator,
    PackagesOperator,
    PackagesTagOperator,
    PushPackagesOperator,
    SdkBootstrapOperator,
    SdkContainerOperator,
    TestsOperator,
    VendorImagesOperator,
)

__all__ = [
    "FlatcarStepOperator",
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
