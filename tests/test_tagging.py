"""Tagging against real git origins made by the tests (see gitrepos.py)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from gitrepos import BRANCH_VERSIONFILE, OVERLAY, PORTAGE, VERSIONFILE, git, tag_submodules

from flatcar_airflow.nightly import branch_nightly, main_nightly
from flatcar_airflow.scripts_repo import GitError, Layout, ScriptsRepo, checkout_layout, redact_url
from flatcar_airflow.tagging import (
    BranchMovedError,
    BuildKind,
    CIIdentity,
    TagConflictError,
    TaggingError,
    TagRequest,
    nightly_version,
    tag_version,
)
from flatcar_airflow.versions import parse_tag

NIGHT = dt.datetime(2026, 8, 21, 21, 0, tzinfo=dt.UTC)
MAIN_NIGHTLY = "main-4799.0.0-nightly-20260821-2100"


def full_request(version: str = MAIN_NIGHTLY, ref: str = "main", **kwargs) -> TagRequest:
    return TagRequest(version=parse_tag(version), ref=ref, kind=BuildKind.FULL, **kwargs)


def os_request(version: str, ref: str = "flatcar-4593", **kwargs) -> TagRequest:
    return TagRequest(version=parse_tag(version), ref=ref, kind=BuildKind.OS, **kwargs)


def test_full_nightly_on_main_head_tags_and_advances_main(origins, repo_for):
    head = origins.head("main")
    result = tag_version(repo_for(origins), full_request())

    assert result.action == "created"
    assert result.branch_pushed and result.branch == "main"
    tagged = origins.tag_commit(MAIN_NIGHTLY)
    assert tagged == result.commit == origins.head("main")
    assert git("rev-parse", f"{tagged}^", cwd=origins.scripts) == head
    assert origins.show(MAIN_NIGHTLY, VERSIONFILE) + "\n" == (
        "FLATCAR_VERSION=4799.0.0+nightly-20260821-2100\n"
        "FLATCAR_VERSION_ID=4799.0.0\n"
        'FLATCAR_BUILD_ID="nightly-20260821-2100"\n'
        "FLATCAR_SDK_VERSION=4799.0.0+nightly-20260821-2100\n"
    )
    message = git("log", "-1", "--format=%B", tagged, cwd=origins.scripts)
    assert message == f"New version: {MAIN_NIGHTLY}\n\nSigned-off-by: flatcar-ci <infra+ci@flatcar-linux.org>"
    assert git("log", "-1", "--format=%an <%ae>|%cn <%ce>", tagged, cwd=origins.scripts) == (
        "flatcar-ci <infra+ci@flatcar-linux.org>|flatcar-ci <infra+ci@flatcar-linux.org>"
    )
    assert git("diff", "--name-only", head, tagged, cwd=origins.scripts) == VERSIONFILE
    assert git("cat-file", "-t", f"refs/tags/{MAIN_NIGHTLY}", cwd=origins.scripts) == "commit"


def test_os_only_nightly_keeps_the_branch_sdk(origins, repo_for):
    repo = repo_for(origins)
    version = nightly_version(repo, "flatcar-4593", BuildKind.OS, NIGHT)
    assert version.tag == "stable-4593.2.4-nightly-20260821-2100"

    result = tag_version(repo, os_request(version.tag))

    assert result.action == "created" and result.branch == "flatcar-4593" and result.branch_pushed
    assert origins.show(version.tag, VERSIONFILE) + "\n" == (
        "FLATCAR_VERSION=4593.2.4+nightly-20260821-2100\n"
        "FLATCAR_VERSION_ID=4593.2.4\n"
        'FLATCAR_BUILD_ID="nightly-20260821-2100"\n'
        "FLATCAR_SDK_VERSION=4593.0.0\n"
    )
    assert origins.head("flatcar-4593") == result.commit
    assert origins.head("main") != result.commit


def test_custom_identity_is_author_committer_and_signoff(origins, repo_for):
    request = full_request("main-4799.0.0-dev-1", identity=CIIdentity("my-ci", "ci@example.org"))
    result = tag_version(repo_for(origins), request)
    assert git("log", "-1", "--format=%an <%ae>|%cn <%ce>|%b", result.commit, cwd=origins.scripts) == (
        "my-ci <ci@example.org>|my-ci <ci@example.org>|Signed-off-by: my-ci <ci@example.org>"
    )


def test_development_build_tag_is_free_standing(origins, repo_for):
    head = origins.head("main")
    result = tag_version(repo_for(origins), full_request("main-4799.0.1-my-feature"))
    assert result.action == "created" and not result.branch_pushed
    assert origins.head("main") == head
    assert git("rev-parse", f"{result.commit}^", cwd=origins.scripts) == head


def test_rerun_reuses_the_identical_tag(origins, repo_for):
    first = tag_version(repo_for(origins), full_request())
    head_after_first = origins.head("main")
    tags = origins.tags()

    again = tag_version(repo_for(origins, "other-cache"), full_request())

    assert again.action == "reused" and not again.lost_race
    assert again.commit == first.commit
    assert origins.tags() == tags
    assert origins.head("main") == head_after_first


def test_rerun_of_a_dev_build_from_its_base_commit_reuses(origins, repo_for):
    base = origins.head("main")
    first = tag_version(repo_for(origins), full_request("main-4799.0.1-pr-17"))
    origins.push_change("main", "README", "newer work\n")
    again = tag_version(repo_for(origins), full_request("main-4799.0.1-pr-17", commit=base))
    assert again.action == "reused" and again.commit == first.commit


def test_divergent_existing_tag_fails_and_is_never_moved(origins, repo_for):
    base = origins.head("main")
    git("tag", MAIN_NIGHTLY, base, cwd=origins.scripts)  # same name, different tree (old version.txt)
    before = origins.tag_commit(MAIN_NIGHTLY)

    with pytest.raises(TagConflictError, match="exists already and is not equal") as err:
        tag_version(repo_for(origins), full_request())

    assert "never moved or deleted" in str(err.value)
    assert origins.tag_commit(MAIN_NIGHTLY) == before
    assert origins.head("main") == base


def test_backfill_of_an_older_commit_tags_without_pushing_the_branch(origins, repo_for):
    old = origins.head("main")
    origins.push_change("main", "README", "later\n", date=dt.datetime(2026, 8, 22, 9, 0, tzinfo=dt.UTC))
    head = origins.head("main")
    repo = repo_for(origins)

    commit = repo.commit_at("main", NIGHT)
    assert commit == old
    result = tag_version(repo, full_request(commit=commit))

    assert result.action == "created" and not result.branch_pushed
    assert origins.head("main") == head
    assert git("rev-parse", f"{MAIN_NIGHTLY}^", cwd=origins.scripts) == old


def test_backfill_request_never_pushes_even_at_the_head(origins, repo_for):
    head = origins.head("main")
    result = tag_version(repo_for(origins), full_request(commit=head, allow_branch_push=False))
    assert result.action == "created" and not result.branch_pushed
    assert origins.head("main") == head


def test_commit_at_follows_the_branch_history_by_date(origins, repo_for):
    dates = [dt.datetime(2026, 9, day, 10, 0, tzinfo=dt.UTC) for day in (1, 5, 20)]
    shas = [origins.push_change("main", "README", f"{i}\n", date=when) for i, when in enumerate(dates)]
    repo = repo_for(origins)
    assert repo.commit_at("main", dt.datetime(2026, 9, 4, tzinfo=dt.UTC)) == shas[0]
    assert repo.commit_at("main", dt.datetime(2026, 9, 19, tzinfo=dt.UTC)) == shas[1]
    assert repo.commit_at("main", dt.datetime(2026, 12, 1, tzinfo=dt.UTC)) == shas[2]
    with pytest.raises(GitError, match="no commit at or before"):
        repo.commit_at("main", dt.datetime(2020, 1, 1, tzinfo=dt.UTC))


class _MovingBranchRepo(ScriptsRepo):
    """Runs ``before_push`` (real git work by someone else) right before our push."""

    before_push = None

    def push(self, refspecs, *, lease=None):
        if self.before_push:
            action, self.before_push = self.before_push, None
            action()
        return super().push(refspecs, lease=lease)


def test_branch_moved_during_tagging_leaves_no_tag_behind(origins, tmp_path):
    """Fault drill: the branch moves on the origin between our fetch and our push. The atomic push is
    refused; the error names the branch, both heads and the tag; no tag is left on the origin nor in the
    local cache repository (the tag is pushed from a commit id, never created locally)."""
    repo = _MovingBranchRepo(origins.url, cache_dir=tmp_path / "c")
    head_before = origins.head("main")
    moved = []
    repo.before_push = lambda: moved.append(
        origins.push_change("main", "README", "pushed during the nightly\n")
    )

    with pytest.raises(BranchMovedError, match="neither the branch nor the tag changed") as err:
        tag_version(repo, full_request())

    assert f"branch main moved from {head_before} to {moved[0]} while tagging {MAIN_NIGHTLY}" in str(
        err.value
    )
    assert MAIN_NIGHTLY not in origins.tags()
    assert origins.head("main") == moved[0]  # the other push stands; ours changed nothing
    assert origins.show("main", "README") == "pushed during the nightly"
    local_refs = repo.git("for-each-ref", "--format=%(refname)").split()
    assert local_refs and f"refs/tags/{MAIN_NIGHTLY}" not in local_refs


def test_losing_a_race_reuses_the_winners_identical_tag(origins, tmp_path):
    loser = _MovingBranchRepo(origins.url, cache_dir=tmp_path / "loser")
    winner_result = {}
    loser.before_push = lambda: winner_result.update(
        result=tag_version(ScriptsRepo(origins.url, cache_dir=tmp_path / "winner"), full_request())
    )

    result = tag_version(loser, full_request())

    assert winner_result["result"].action == "created"
    assert result.action == "reused" and result.lost_race
    assert result.commit == winner_result["result"].commit == origins.tag_commit(MAIN_NIGHTLY)
    assert origins.head("main") == result.commit
    assert [t for t in origins.tags() if t.startswith("main-4799")] == [MAIN_NIGHTLY]


def test_losing_a_race_for_a_divergent_tag_is_a_conflict(origins, tmp_path):
    loser = _MovingBranchRepo(origins.url, cache_dir=tmp_path / "loser")
    # The winner tagged the same name from another commit (another tree).
    loser.before_push = lambda: git(
        "tag", "main-4799.0.1-x", origins.head("flatcar-4593"), cwd=origins.scripts
    )
    with pytest.raises(TagConflictError):
        tag_version(loser, full_request("main-4799.0.1-x"))
    assert origins.tag_commit("main-4799.0.1-x") == origins.head("flatcar-4593")


def test_two_concurrent_taggers_end_with_one_tag_and_one_loser(origins, tmp_path):
    barrier = threading.Barrier(2)
    results, errors = [], []

    def run(name):
        repo = ScriptsRepo(origins.url, cache_dir=tmp_path / name)
        barrier.wait()
        try:
            results.append(tag_version(repo, full_request()))
        except Exception as err:
            errors.append(err)

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors
    assert sorted(r.action for r in results) == ["created", "reused"]
    assert len({r.commit for r in results}) == 1
    assert origins.tag_commit(MAIN_NIGHTLY) == results[0].commit == origins.head("main")


def _tag_nightly_then_next_night(origins, repo_for, outputs_exist, force=False, seen=None, heads=None):
    """Tag yesterday's nightly, then ask for tonight's; ``heads`` gets main's head between the two."""
    tag_version(repo_for(origins), full_request())  # yesterday's nightly, main now at its commit
    if heads is not None:
        heads.append(origins.head("main"))
    next_night = main_nightly(NIGHT + dt.timedelta(days=1))

    def check(candidate):
        if seen is not None:
            seen.append(candidate)
        return outputs_exist

    request = full_request(
        next_night.tag, outputs_exist=None if outputs_exist is None else check, force=force
    )
    return next_night, tag_version(repo_for(origins), request)


def test_nightly_shortcut_skips_when_unchanged_and_outputs_exist(origins, repo_for):
    seen, heads = [], []
    next_night, result = _tag_nightly_then_next_night(origins, repo_for, True, seen=seen, heads=heads)
    head_before = heads[0]  # read before tonight's call, which must leave main where it was
    assert result.action == "skipped"
    assert result.tag == MAIN_NIGHTLY
    assert next_night.tag not in origins.tags()
    assert origins.head("main") == head_before
    assert seen[0].tag == MAIN_NIGHTLY
    assert seen[0].versionfile.os.versionfile_version == "4799.0.0+nightly-20260821-2100"


@pytest.mark.parametrize(("outputs_exist", "force"), [(False, False), (None, False), (True, True)])
def test_nightly_shortcut_builds_when_outputs_missing_unchecked_or_forced(
    origins, repo_for, outputs_exist, force
):
    next_night, result = _tag_nightly_then_next_night(origins, repo_for, outputs_exist, force=force)
    assert result.action == "created"
    assert next_night.tag in origins.tags()


def test_nightly_shortcut_on_a_release_tag_of_a_maintenance_branch(origins, repo_for):
    git("tag", "stable-4593.2.4", origins.head("flatcar-4593"), cwd=origins.scripts)
    version = branch_nightly("4593.2.4", NIGHT)
    result = tag_version(repo_for(origins), os_request(version.tag, outputs_exist=lambda c: True))
    assert result.action == "skipped" and result.tag == "stable-4593.2.4"
    assert version.tag not in origins.tags()


def test_nightly_shortcut_ignores_changes_since_the_tag(origins, repo_for):
    tag_version(repo_for(origins), full_request())
    origins.push_change("main", "README", "a real change\n")
    request = full_request(main_nightly(NIGHT + dt.timedelta(days=1)).tag, outputs_exist=lambda c: True)
    assert tag_version(repo_for(origins), request).action == "created"


def test_cache_holds_only_what_tagging_needs(origins, repo_for):
    for i in range(20):
        origins.push_change("main", "README", f"{i}\n")
    repo = repo_for(origins)
    tag_version(repo, full_request())
    assert (repo.path / "shallow").exists()
    assert int(git("rev-list", "--all", "--count", cwd=repo.path)) <= 2
    assert git("for-each-ref", "refs/heads", cwd=repo.path) == ""


def test_layout_detection(origins, seed_origins, repo_for):
    repo = repo_for(origins)
    head = origins.head("main")
    repo.ensure_commit(head)
    assert repo.layout(head) is Layout.IN_TREE
    seed_repo = repo_for(seed_origins, "seed-cache")
    seed_head = seed_origins.head("main")
    seed_repo.ensure_commit(seed_head)
    assert seed_repo.layout(seed_head) is Layout.SUBMODULES
    assert checkout_layout(origins.work) is Layout.IN_TREE
    assert checkout_layout(seed_origins.work) is Layout.SUBMODULES


def test_seed_layout_pins_submodules_at_the_matching_version_tags(seed_origins, repo_for):
    tag = "alpha-3066.0.0"
    pins = tag_submodules(seed_origins, tag)

    result = tag_version(repo_for(seed_origins), os_request(tag, ref="main"))

    assert result.layout == "submodules"
    assert dict(result.submodules) == pins
    tree = git("ls-tree", tag, OVERLAY, PORTAGE, cwd=seed_origins.scripts).splitlines()
    assert tree == [
        f"160000 commit {pins['coreos-overlay']}\t{OVERLAY}",
        f"160000 commit {pins['portage-stable']}\t{PORTAGE}",
    ]
    changed = git("diff", "--name-only", f"{tag}^", tag, cwd=seed_origins.scripts).splitlines()
    assert sorted(changed) == sorted([VERSIONFILE, OVERLAY, PORTAGE])


def test_seed_layout_with_explicit_submodule_refs(seed_origins, repo_for):
    tag_submodules(seed_origins, "beta-3033.1.0")
    refs = {"coreos-overlay": "main", "portage-stable": "beta-3033.1.0"}
    result = tag_version(repo_for(seed_origins), os_request("beta-3033.1.1", ref="main", submodule_refs=refs))
    overlay_main = git("rev-parse", "main", cwd=seed_origins.submodules["coreos-overlay"])
    assert result.submodules["coreos-overlay"] == overlay_main


def test_seed_layout_without_matching_submodule_tag_fails_before_pushing(seed_origins, repo_for):
    tags = seed_origins.tags()
    with pytest.raises(TaggingError, match=r"coreos-overlay .* has no tag or branch 'alpha-3066\.0\.0'"):
        tag_version(repo_for(seed_origins), os_request("alpha-3066.0.0", ref="main"))
    assert seed_origins.tags() == tags


def test_unknown_ref_fails_before_any_change(origins, repo_for):
    tags, head = origins.tags(), origins.head("main")
    with pytest.raises(GitError, match="neither a branch nor a tag"):
        tag_version(repo_for(origins), full_request(ref="no-such-branch"))
    assert origins.tags() == tags and origins.head("main") == head


@pytest.mark.parametrize("ref", ["--upload-pack=touch /tmp/x", "main;rm", "../main", "a b", ""])
def test_dangerous_refs_are_refused_before_git_runs(ref):
    with pytest.raises(ValueError):
        full_request(ref=ref)


def test_credentials_in_the_url_never_reach_errors(tmp_path):
    repo = ScriptsRepo("https://ci:s3cr3t-token@127.0.0.1:9/flatcar/scripts.git", cache_dir=tmp_path)
    with pytest.raises(GitError) as err:
        tag_version(repo, full_request())
    assert "s3cr3t-token" not in str(err.value)
    assert "git ls-remote failed" in str(err.value)


def test_redact_url():
    assert redact_url("https://ci:tok@host:8443/x.git") == "https://ci:***@host:8443/x.git"
    assert (
        redact_url("ssh://git@github.com/flatcar/scripts.git") == "ssh://git@github.com/flatcar/scripts.git"
    )
    assert redact_url("/srv/git/scripts.git") == "/srv/git/scripts.git"


def test_tagging_from_a_tag_is_free_standing(origins, repo_for):
    git("tag", "stable-4593.2.4", origins.head("flatcar-4593"), cwd=origins.scripts)
    head = origins.head("flatcar-4593")
    result = tag_version(repo_for(origins), os_request("stable-4593.2.5", ref="stable-4593.2.4"))
    assert result.action == "created" and result.branch is None and not result.branch_pushed
    assert origins.head("flatcar-4593") == head
    assert "FLATCAR_VERSION=4593.2.5\n" in origins.show("stable-4593.2.5", VERSIONFILE) + "\n"


def test_branch_versionfile_is_read_from_the_branch(origins, repo_for):
    repo = repo_for(origins)
    head = origins.head("flatcar-4593")
    repo.ensure_commit(head)
    assert repo.read_versionfile(head).render() == BRANCH_VERSIONFILE
