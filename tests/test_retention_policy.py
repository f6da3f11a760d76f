"""The retention policy (flatcar_airflow/retention/policy.py): pure logic, no I/O."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from flatcar_airflow.retention.policy import Build, decide, is_development_tag, orphans, protected_orphans

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def _nightly(day: int, branch_prefix: str = "main-4799.0.0") -> str:
    when = NOW - dt.timedelta(days=day)
    return f"{branch_prefix}-nightly-{when:%Y%m%d}-2100"


def test_release_tags_are_never_candidates():
    assert not is_development_tag("stable-4593.2.5")
    assert not is_development_tag("stable-4593.2.5-pro")
    assert not is_development_tag("sdk-4593.0.0")
    assert is_development_tag("main-4799.0.0-nightly-20261101-2100")
    assert is_development_tag("alpha-4799.0.0-my-fix")
    decision = decide(
        ["stable-4593.2.5", "lts-4081.3.6", "not-a-version"], {}, keep=0, min_age_days=0, now=NOW
    )
    assert decision.purge == []
    assert decision.kept == {"stable-4593.2.5": "official release", "lts-4081.3.6": "official release"}


def test_keep_newest_per_branch_and_everything_young():
    main = [_nightly(day) for day in range(0, 40)]
    maint = [_nightly(day, "stable-4593.2.5") for day in range(0, 40, 2)]
    known = {tag: Build(tag, branch="main") for tag in main}
    known |= {tag: Build(tag, branch="flatcar-4593") for tag in maint}
    decision = decide(main + maint, known, keep=5, min_age_days=14, now=NOW)
    # main: the 5 newest and the ones younger than 14 days stay; 15 days and older go.
    assert set(decision.purge) == {_nightly(d) for d in range(15, 40)} | {
        _nightly(d, "stable-4593.2.5") for d in range(16, 40, 2)
    }
    assert decision.purge[0] == _nightly(39)  # oldest first
    assert decision.kept[_nightly(0)] == "one of the newest 5 builds of main"
    assert decision.kept[_nightly(10)] == "younger than 14 days"
    # keep counts per branch: with min age 0 the 5 newest of each branch stay.
    decision = decide(main + maint, known, keep=5, min_age_days=0, now=NOW)
    assert {t for t in main + maint if t not in decision.purge} == set(main[:5]) | set(maint[:5])


def test_protections_pins_runs_nightlies_and_sdks():
    old = [_nightly(day) for day in range(30, 40)]
    known = {tag: Build(tag, branch="main") for tag in old}
    known[old[3]] = Build(old[3], branch="main", successful_nightly=True)
    known[old[6]] = Build(old[6], branch="main", successful_nightly=True)
    os_only = "main-4799.0.1-my-fix"
    known[os_only] = Build(
        os_only,
        branch="main",
        created=NOW,
        version="4799.0.1+my-fix",
        sdk_version=old[8].removeprefix("main-").replace("-nightly", "+nightly"),
    )
    decision = decide(
        [*old, os_only],
        known,
        keep=1,
        min_age_days=0,
        now=NOW,
        pinned=[old[1]],
        in_use={old[2]: "flatcar_full run manual__1"},
        in_use_versions={old[4].removeprefix("main-").replace("-nightly", "+nightly"): "flatcar_os_x run y"},
        supported_branches=["main"],
    )
    assert decision.kept[old[1]] == "pinned on the builds page"
    assert decision.kept[old[2]] == "in use by flatcar_full run manual__1"
    assert decision.kept[old[4]].startswith("its version 4799.0.0+nightly-")
    assert decision.kept[old[3]] == "the last successful nightly of main"  # the newest successful one
    assert old[6] in decision.purge
    assert decision.kept[old[8]] == f"its directories are the SDK of kept {os_only}"
    assert decision.kept[os_only] == "one of the newest 1 builds of main"
    assert set(decision.purge) == {old[i] for i in (0, 5, 6, 7, 9)}
    # The last nightly counts for supported branches only.
    decision = decide(old, known, keep=0, min_age_days=0, now=NOW, supported_branches=[])
    assert old[3] in decision.purge


def test_unknown_ages_are_kept_and_shared_version_numbers_protect_each_other():
    decision = decide(
        ["main-4799.0.0-my-fix", "alpha-4799.0.0-my-fix"],
        {"alpha-4799.0.0-my-fix": Build("alpha-4799.0.0-my-fix", created=NOW)},
        keep=0,
        min_age_days=14,
        now=NOW,
    )
    assert decision.purge == []
    assert decision.kept["main-4799.0.0-my-fix"] == "its age is not known"


def test_orphans_and_protected_orphans():
    tags = ["main-4799.0.0-nightly-20261101-2100", "stable-4593.2.4"]
    names = ["4799.0.0+nightly-20261101-2100", "4799.0.0-nightly-20261101-2100", "4593.0.0", "4593.2.4", "x"]
    assert orphans(names, tags) == ["4593.0.0", "x"]
    refusals = protected_orphans(["4593.0.0", "x"], {"4593.0.0": "the SDK of kept stable-4593.2.5-nightly"})
    assert refusals == [
        "the orphan sweep would remove 4593.0.0, which is the SDK of kept stable-4593.2.5-nightly"
    ]


def test_bad_numbers_are_refused():
    with pytest.raises(ValueError, match="must not be negative"):
        decide([], {}, keep=-1, now=NOW)


def test_random_histories_never_purge_what_is_protected():
    rng = random.Random(12)
    for _ in range(200):
        tags = [_nightly(rng.randrange(0, 100), f"main-4799.0.{rng.randrange(3)}") for _ in range(30)]
        tags += ["stable-4593.2.5", "beta-4628.1.0"]
        known = {
            t: Build(t, branch=rng.choice(["main", "x"]), successful_nightly=rng.random() < 0.3) for t in tags
        }
        pinned = set(rng.sample(tags, 3))
        in_use = {t: "run" for t in rng.sample(tags, 3)}
        keep, age = rng.randrange(0, 6), rng.randrange(0, 30)
        decision = decide(tags, known, keep=keep, min_age_days=age, now=NOW, pinned=pinned, in_use=in_use)
        purged = set(decision.purge)
        assert not purged & (pinned | set(in_use) | {"stable-4593.2.5", "beta-4628.1.0"})
        assert purged | set(decision.kept) == set(tags)
        assert not purged & set(decision.kept)
        for tag in purged:
            assert (
                NOW - dt.datetime.strptime(tag.rsplit("-", 2)[1], "%Y%m%d").replace(tzinfo=dt.UTC)
            ).days >= age
