"""The causes a failed step's error names, from output the real scripts print (tests/ of pure logic)."""

from __future__ import annotations

import pytest

from flatcar_airflow.failures import diagnose

# What a build host without network printed in sdk_bootstrap/packages (curl's retries, then the scripts'
# own error), and other failures as the scripts and their tools word them.
NO_NETWORK = [
    "+ docker pull ghcr.io/flatcar/flatcar-sdk-all:4790.0.0",
    "curl: (6) Could not resolve host: ghcr.io",
    *[f"Retrying in {n} seconds..." for n in range(40)],
    'Error response from daemon: Get "https://ghcr.io/v2/": dial tcp: lookup ghcr.io on 10.0.0.2:53: '
    "server misbehaving",
    "ERROR: failed to pull the SDK container",
]


@pytest.mark.parametrize(
    ("lines", "kind", "words"),
    [
        (NO_NETWORK, "unreachable", "cannot reach ghcr.io"),
        (["./sdk_lib/sdk_container_common.sh: line 201: sudo: command not found"], "no-sudo", "no sudo"),
        (["ci-automation/ci_automation_common.sh: line 88: jq: command not found"], "missing-tool", "jq"),
        (
            [
                "tar: flatcar_production_image.bin: Wrote only 4096 of 10240 bytes",
                "tar: Error: No space left on device",
            ],
            "disk-full",
            "disk full",
        ),
        (
            [
                "bincache@cache.example: Permission denied (publickey).",
                "rsync: connection unexpectedly closed",
            ],
            "auth-refused",
            "ssh key not accepted",
        ),
        (
            [
                "curl: (22) The requested URL returned error: 404",
                "ERROR: could not download https://bincache/images/amd64/1.2.3/flatcar_production_image.bin.bz2",
            ],
            "missing-input",
            "missing (HTTP 404)",
        ),
        (
            ["ssh: connect to host bincache.example port 2222: Connection refused"],
            "unreachable",
            "cannot reach bincache.example by ssh: Connection refused",
        ),
        (["Error response from daemon: manifest unknown"], "missing-input", "container image"),
        (
            ["building...", "emerge: there are no ebuilds to satisfy foo", "make: *** [all] Error 2"],
            "unknown",
            "its last error: make: *** [all] Error 2",
        ),
    ],
)
def test_a_failure_names_its_cause(lines, kind, words):
    failure = diagnose(list(enumerate(lines, start=100)), exit_status=6)
    assert failure.kind == kind
    assert words in failure.summary
    assert failure.line in lines and failure.line_number == 100 + lines.index(failure.line)


def test_the_newest_cause_wins_and_the_message_says_it_first():
    failure = diagnose(list(enumerate(NO_NETWORK, start=1)), exit_status=6)
    # The daemon's lookup error (the newest cause line), not the first curl error 42 lines up.
    assert failure.line_number == 43
    message = failure.message("packages", "exit status 6 after 4m21s")
    first = message.splitlines()[0]
    assert first.startswith("packages failed: cannot reach ghcr.io: its name does not resolve")
    assert "(line 43 of the step's output: Error response from daemon" in first and first.endswith(
        "exit status 6 after 4m21s"
    )
    assert "ERROR: failed to pull the SDK container" in message.splitlines()[-1]


def test_the_wrappers_own_lines_are_not_the_steps_cause():
    failure = diagnose(["[flatcar-airflow] ssh: connect to host x port 22: Connection refused", "oops"], 1)
    assert failure.kind == "unknown" and failure.line == "oops"
    assert diagnose([], 3).summary == "it printed nothing"


def test_the_summary_names_root_failures_apart_from_what_they_blocked():
    from flatcar_airflow.build_plan import failure_message

    states = {
        "sdk_bootstrap": {"state": "success"},
        "amd64.packages": {"state": "failed"},
        "arm64.image": {"state": "failed"},
        **{f"amd64.{step}": {"state": "upstream_failed"} for step in ("push_packages", "image", "vms")},
    }
    manifest = {
        "version": "main-4901.0.0-nightly-20261201-2100",
        "steps": {},
        "arches": {
            "amd64": {"packages": {"state": "failed", "failure": {"summary": "cannot reach ghcr.io"}}},
            "arm64": {"image": {"state": "failed"}},
        },
    }
    failed = ["amd64.packages", "amd64.push_packages", "amd64.image", "amd64.vms", "arm64.image"]
    assert failure_message(manifest, failed, states) == (
        "build of main-4901.0.0-nightly-20261201-2100 failed: amd64.packages (cannot reach ghcr.io), "
        "arm64.image; 3 tasks not run because of it: amd64.push_packages, amd64.image, amd64.vms"
    )


def test_a_full_disk_under_the_cache_directory_is_the_caches():
    line = 'rsync: write failed on "/srv/bincache/images/amd64/1.0/image.bin": No space left on device (28)'
    assert diagnose([line], 11, cache_prefix="/srv/bincache").summary.startswith(
        "disk full on the build cache"
    )
    assert diagnose([line], 11, cache_prefix="/srv/other").summary == "disk full on the build host"
