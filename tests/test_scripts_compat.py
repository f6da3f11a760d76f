"""Compatibility with the scripts repo's own versioning (re-stated in tests/compat/scripts_tagging.sh).

For the same commit and version, the tree flatcar-airflow tags must be the tree the scripts'
``create_versionfile`` + ``update_and_push_version`` tag; and after our tagger ran, the scripts' function
called with the same version must take its "Reusing existing tag" path (the step scripts call it again).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from gitrepos import git, tag_submodules

from flatcar_airflow.scripts_repo import ScriptsRepo
from flatcar_airflow.tagging import BuildKind, TagRequest, tag_version
from flatcar_airflow.versions import parse_tag

COMPAT = Path(__file__).parent / "compat" / "scripts_tagging.sh"


def scripts(checkout: Path, commands: str, era: str = "") -> subprocess.CompletedProcess:
    """Run bash in a scripts checkout with the re-stated functions sourced."""
    env = {**os.environ, "SCRIPTS_ERA": era, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(checkout.parent)}
    script = f"set -euo pipefail\nsource {COMPAT}\n{commands}\n"
    return subprocess.run(["bash", "-c", script], cwd=checkout, env=env, capture_output=True, text=True)


def clone(origin: Path, where: Path, rev: str, submodules: bool = False) -> Path:
    git("clone", "-q", str(origin), str(where))
    git("checkout", "-q", rev, cwd=where)
    if submodules:
        git("-c", "protocol.file.allow=always", "submodule", "update", "-q", "--init", cwd=where)
    return where


def copy_origin(origins, tmp_path: Path) -> Path:
    copy = tmp_path / "scripts-copy.git"
    shutil.copytree(origins.scripts, copy)
    return copy


def ours(origins, tmp_path: Path, version: str, ref: str, kind: BuildKind):
    repo = ScriptsRepo(origins.url, cache_dir=tmp_path / "cache")
    return tag_version(repo, TagRequest(version=parse_tag(version), ref=ref, kind=kind))


def tree(origin: Path, tag: str) -> str:
    return git("rev-parse", f"refs/tags/{tag}^{{tree}}", cwd=origin)


@pytest.mark.parametrize(
    ("version", "branch", "kind", "shell"),
    [
        # sdk_bootstrap: create_versionfile "${version#*-}"; update_and_push_version "$version" main
        (
            "main-4799.0.0-nightly-20260821-2100",
            "main",
            BuildKind.FULL,
            'create_versionfile "{vernum}"; update_and_push_version "{version}" main',
        ),
        # packages_tag: create_versionfile "$FLATCAR_SDK_VERSION" "$version"; ... flatcar-MAJOR
        (
            "stable-4593.2.4-nightly-20260821-2100",
            "flatcar-4593",
            BuildKind.OS,
            "source sdk_container/.repo/manifests/version.txt; "
            'create_versionfile "$FLATCAR_SDK_VERSION" "{version}"; '
            'update_and_push_version "{version}" flatcar-4593',
        ),
        # a development build: free-standing tag
        (
            "main-4799.0.1-my-feature",
            "main",
            BuildKind.FULL,
            'create_versionfile "{vernum}"; update_and_push_version "{version}"',
        ),
        # an official release built OS-only
        (
            "beta-4593.1.0",
            "flatcar-4593",
            BuildKind.OS,
            "source sdk_container/.repo/manifests/version.txt; "
            'create_versionfile "$FLATCAR_SDK_VERSION" "{version}"; '
            'update_and_push_version "{version}"',
        ),
    ],
)
def test_same_tree_as_the_scripts_and_the_scripts_reuse_our_tag(
    origins, tmp_path, version, branch, kind, shell
):
    base = origins.head(branch)
    theirs_origin = copy_origin(origins, tmp_path)
    command = shell.format(version=version, vernum=version.split("-", 1)[1])

    proc = scripts(clone(theirs_origin, tmp_path / "theirs", branch), command)
    assert proc.returncode == 0, proc.stderr
    result = ours(origins, tmp_path, version, branch, kind)

    assert result.action == "created"
    assert tree(origins.scripts, version) == tree(theirs_origin, version) == result.tree
    # Same branch behaviour: both advanced the branch for a nightly, neither for other builds.
    assert (origins.head(branch) != base) == (git("rev-parse", branch, cwd=theirs_origin) != base)

    # The step scripts then run update_and_push_version again, from the base commit: they reuse our tag.
    tags = git("show-ref", "--tags", cwd=origins.scripts)
    again = scripts(clone(origins.scripts, tmp_path / "rerun", base), command)
    assert again.returncode == 0, again.stderr
    assert "Reusing existing tag" in again.stderr
    assert git("rev-parse", "HEAD", cwd=tmp_path / "rerun") == result.commit
    assert git("show-ref", "--tags", cwd=origins.scripts) == tags


def test_scripts_refuse_a_version_our_tagger_refused_for_a_different_tree(origins, tmp_path):
    """Our conflict rule is theirs: a tag with another tree is 'not equal' for the scripts too."""
    ours(origins, tmp_path, "main-4799.0.1-x", "main", BuildKind.FULL)
    origins.push_change("flatcar-4593", "README", "a fix only on the branch\n")
    proc = scripts(
        clone(origins.scripts, tmp_path / "other", "flatcar-4593"),
        'create_versionfile "4799.0.1-x"; update_and_push_version "main-4799.0.1-x"',
    )
    assert proc.returncode == 1
    assert "Remote tag exists already and is not equal" in proc.stderr


def test_seed_era_submodule_layout_same_tree_and_reuse(seed_origins, tmp_path):
    version = "alpha-3066.0.0"
    tag_submodules(seed_origins, version)
    base = seed_origins.head("main")
    theirs_origin = copy_origin(seed_origins, tmp_path)
    command = (
        f'update_submodule coreos-overlay "{version}"; update_submodule portage-stable "{version}"; '
        "source sdk_container/.repo/manifests/version.txt; "
        f'create_versionfile "$FLATCAR_SDK_VERSION" "{version}"; '
        f'update_and_push_version "{version}"'
    )

    proc = scripts(clone(theirs_origin, tmp_path / "theirs", "main", submodules=True), command, era="seed")
    assert proc.returncode == 0, proc.stderr
    result = ours(seed_origins, tmp_path, version, "main", BuildKind.OS)

    assert result.layout == "submodules"
    assert tree(seed_origins.scripts, version) == tree(theirs_origin, version) == result.tree

    again = scripts(
        clone(seed_origins.scripts, tmp_path / "rerun", base, submodules=True), command, era="seed"
    )
    assert again.returncode == 0, again.stderr
    assert "Reusing existing tag" in again.stderr


#: One version commit time for both taggers: the commits can then be compared byte for byte.
_COMMIT_DATE = "1787000000 +0000"
#: A stand-in for an era's ci_automation_common.sh: only the line that differs between the eras.
_ERA_FUNCTION = (
    'function update_and_push_version() {{\n    git commit {options}-m "New version: ${{version}}"\n}}\n'
)


def _commit_object(origin: Path, tag: str) -> str:
    """The raw commit object (every byte, the final newline too)."""
    return subprocess.run(
        ["git", "cat-file", "commit", f"refs/tags/{tag}^{{commit}}"],
        cwd=origin,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.mark.parametrize(
    ("era", "options", "signed_off"),
    [
        ("today", "--signoff --allow-empty ", True),  # flatcar/scripts since July 2025
        ("between", "--allow-empty ", False),  # in-tree, before the scripts signed off
        ("short-option", "-s --allow-empty ", True),  # the week it was spelled -s
    ],
)
def test_the_version_commit_is_byte_identical_to_the_scripts_own_in_tree(
    origins, tmp_path, monkeypatch, era, options, signed_off
):
    """Same tree was not enough: the commit (message, sign-off or not, identity) is the one the commit's
    own scripts write; only the commit time is fixed for both, to compare bytes."""
    monkeypatch.setenv("GIT_AUTHOR_DATE", _COMMIT_DATE)
    monkeypatch.setenv("GIT_COMMITTER_DATE", _COMMIT_DATE)
    origins.push_change(
        "main", "ci-automation/ci_automation_common.sh", _ERA_FUNCTION.format(options=options)
    )
    version = "main-4799.0.1-my-feature"
    theirs_origin = copy_origin(origins, tmp_path)
    command = f'create_versionfile "4799.0.1-my-feature"; update_and_push_version "{version}"'
    monkeypatch.setenv("SCRIPTS_SIGNOFF", "1" if signed_off else "0")
    proc = scripts(clone(theirs_origin, tmp_path / "theirs", "main"), command)
    assert proc.returncode == 0, proc.stderr

    result = ours(origins, tmp_path, version, "main", BuildKind.FULL)

    mine, theirs = _commit_object(origins.scripts, version), _commit_object(theirs_origin, version)
    assert mine == theirs
    assert ("Signed-off-by: flatcar-ci <infra+ci@flatcar-linux.org>" in mine) == signed_off
    assert result.commit == git("rev-parse", f"refs/tags/{version}^{{commit}}", cwd=theirs_origin)


def test_the_seed_era_version_commit_is_byte_identical_and_not_signed_off(
    seed_origins, tmp_path, monkeypatch
):
    """The seed era's update_and_push_version (flatcar-3374 and before) commits without --signoff."""
    monkeypatch.setenv("GIT_AUTHOR_DATE", _COMMIT_DATE)
    monkeypatch.setenv("GIT_COMMITTER_DATE", _COMMIT_DATE)
    version = "alpha-3066.0.0"
    tag_submodules(seed_origins, version)
    theirs_origin = copy_origin(seed_origins, tmp_path)
    command = (
        f'update_submodule coreos-overlay "{version}"; update_submodule portage-stable "{version}"; '
        "source sdk_container/.repo/manifests/version.txt; "
        f'create_versionfile "$FLATCAR_SDK_VERSION" "{version}"; '
        f'update_and_push_version "{version}"'
    )
    proc = scripts(clone(theirs_origin, tmp_path / "theirs", "main", submodules=True), command, era="seed")
    assert proc.returncode == 0, proc.stderr

    result = ours(seed_origins, tmp_path, version, "main", BuildKind.OS)

    mine = _commit_object(seed_origins.scripts, version)
    assert mine == _commit_object(theirs_origin, version)
    assert mine.endswith(f"\n\nNew version: {version}\n") and "Signed-off-by" not in mine
    assert result.layout == "submodules"
