"""The release's checks (flatcar_airflow.release.checks) against the real loopback build cache, on sample
builds written the way the summary tasks write them: each refusal names its reason, a releasable build
gives its plan. No docker: fast; tests/test_release.py runs the same checks on a real build."""

from __future__ import annotations

import pytest
import yaml
from connections import CACHE_CONN
from sample_builds import sample_manifest, write_builds

from flatcar_airflow.config import parse_config
from flatcar_airflow.release.checks import ReleaseRefused, check_release

BRANCH = "flatcar-4593"


@pytest.fixture
def builds(build_cache, connections):
    build_cache.clear()
    manifests = [
        sample_manifest(BRANCH, 0, channel="stable", base="4593.2.0"),
        sample_manifest(BRANCH, 1, channel="stable", base="4593.2.0", failing_tests=("cl.basic",)),
        sample_manifest(BRANCH, 2, channel="stable", base="4593.2.0"),
        sample_manifest(BRANCH, 3, channel="stable", base="4593.2.0", arches=("amd64",)),
        sample_manifest("main", 0, channel="main", base="4901.0.0"),
    ]
    entries = write_builds(build_cache.root, manifests)
    tags = [entry["version_tag"] for entry in reversed(entries[BRANCH])]
    # a file of the third build's arm64 image is gone from the cache
    missing = manifests[2]["arches"]["arm64"]["image"]["artifacts"][-1]["path"]
    build_cache.path(missing).unlink()
    yield {"tags": tags, "main": entries["main"][0]["version_tag"], "missing": missing}
    build_cache.clear()


def _config(**release):
    return parse_config(
        yaml.safe_dump(
            {
                "scripts_repo": "https://github.com/flatcar/scripts.git",
                "buildcache_conn_id": CACHE_CONN,
                "full": {"enabled": True, "branch": "main"},
                "os": {"branches": [BRANCH]},
                "release": {"offers": {"aws": "aws_conn", "gce": None}, **release},
            }
        )
    )


def test_each_refusal_names_its_reason_and_a_tested_build_is_planned(builds):
    config = _config()
    passing, failing, incomplete, one_arch = builds["tags"]
    plan = check_release(config, {"version": passing, "offers": ["aws"]})
    assert (plan["tag"], plan["branch"], plan["arches"], plan["offers"], plan["dry_run"]) == (
        passing, BRANCH, ["amd64", "arm64"], ["aws"], True,
    )  # fmt: skip
    assert plan["versionfile"]["FLATCAR_VERSION"] == passing.split("-", 1)[1].replace("-nightly", "+nightly")
    main = builds["main"]
    missing = builds["missing"]
    refusals = [
        ({"version": "stable-4593.2.9"}, "stable-4593.2.9 does not exist: no build of it in the builds"),
        ({"version": main}, f"{main} is a build of main, not of a release branch ({BRANCH})"),
        ({"version": failing}, f"{failing}: its tests did not pass: amd64 qemu_uefi: 1 failed (cl.basic); "
                               "arm64 qemu_uefi: 1 failed (cl.basic)"),
        ({"version": incomplete}, f"{incomplete}: its artifacts are missing from the build cache: {missing}"),
        ({"version": one_arch}, f"{one_arch}: its tests did not pass: no test results for arm64"),
        ({"version": passing, "offers": ["gce"]}, "offers ['gce'] cannot be published: choose among aws"),
        ({"version": "stable-4593.2.0\n"}, "is not a version tag"),
    ]  # fmt: skip
    for params, reason in refusals:
        with pytest.raises(ReleaseRefused) as refused:
            check_release(config, {"offers": ["aws"], **params})
        assert reason in str(refused.value), (reason, str(refused.value))


def test_the_release_step_gets_the_chosen_offers_credentials_and_every_other_variable_empty(monkeypatch):
    import json

    from airflow.sdk.exceptions import AirflowFailException

    from flatcar_airflow.operators import ReleaseOperator
    from flatcar_airflow.steps import RELEASE_OFFERS, RELEASE_UNSET

    aws = {name: f"value-of-{name}" for name in RELEASE_OFFERS["aws"]}
    monkeypatch.setenv("AIRFLOW_CONN_REL_AWS", json.dumps({"conn_type": "generic", "extra": aws}))
    monkeypatch.setenv(
        "AIRFLOW_CONN_REL_GCE",
        json.dumps({"conn_type": "generic", "extra": {"GCP_JSON_KEY": "k", "OTHER": "x"}}),
    )
    operator = ReleaseOperator(
        task_id="release", build={}, scripts_repo="x", offer_conn_ids={"aws": "rel_aws", "gce": "rel_gce"}
    )
    operator.options = {"offers": ["aws"]}
    secret_env = operator._secret_env({})
    every = [*RELEASE_OFFERS["aws"], *RELEASE_OFFERS["gce"], *RELEASE_UNSET]
    assert secret_env == {name: aws.get(name, "") for name in every}
    assert operator._sdk_env_names(secret_env) == every
    operator.options = {"offers": ["aws", "gce"]}
    with pytest.raises(AirflowFailException) as failed:
        operator._secret_env({})
    assert str(failed.value) == (
        "offer gce: connection 'rel_gce' must give GCP_JSON_KEY, GOOGLE_RELEASE_CREDENTIALS; "
        "missing GOOGLE_RELEASE_CREDENTIALS; unknown OTHER"
    )


def test_the_sbsign_step_gets_its_key_and_certificate_as_private_files(monkeypatch):
    import json

    from airflow.sdk.exceptions import AirflowFailException

    from flatcar_airflow.operators import SbsignImageOperator

    key, cert = "-----BEGIN PRIVATE KEY-----\nabc\n", "-----BEGIN CERTIFICATE-----\ndef\n"
    monkeypatch.setenv(
        "AIRFLOW_CONN_SB", json.dumps({"conn_type": "generic", "password": key, "extra": {"cert": cert}})
    )
    monkeypatch.setenv("AIRFLOW_CONN_SB_NOCERT", json.dumps({"conn_type": "generic", "password": key}))
    operator = SbsignImageOperator(task_id="sbsign_image", build={}, scripts_repo="x", sbsign_conn_id="sb")
    files: dict[str, bytes] = {}
    assert operator._secret_env(files) == {}
    assert files == {"secrets/sbsign.key": key.encode(), "secrets/sbsign.crt": cert.encode()}
    assert "sb" not in operator.template_fields and key not in repr(vars(operator))
    operator.sbsign_conn_id = "sb_nocert"
    with pytest.raises(AirflowFailException, match=r"needs password \(the PEM key\) and extra 'cert'"):
        operator._secret_env({})
