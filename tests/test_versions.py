"""Version rules: examples from Flatcar's real tags, and properties over generated strings."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flatcar_airflow.nightly import branch_nightly, main_major, main_nightly, nightly_build_id, run_time
from flatcar_airflow.versionfile import VersionFile
from flatcar_airflow.versions import (
    MAX_LENGTH,
    FlatcarVersion,
    VersionError,
    parse_any,
    parse_build_id,
    parse_tag,
    parse_version_number,
)

# -- examples ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "channel", "vernum", "build_id", "official"),
    [
        ("main-4799.0.0-nightly-20260821-2100", "main", "4799.0.0", "nightly-20260821-2100", False),
        (
            "main-4799.0.0-nightly-20260821-2100-INTERMEDIATE",
            "main",
            "4799.0.0",
            "nightly-20260821-2100-INTERMEDIATE",
            False,
        ),
        ("stable-4593.2.5-nightly-20260821-2100", "stable", "4593.2.5", "nightly-20260821-2100", False),
        ("alpha-4790.0.0", "alpha", "4790.0.0", "", True),
        ("beta-3066.1.0", "beta", "3066.1.0", "", True),
        ("lts-3033.3.18", "lts", "3033.3.18", "", True),
        ("main-4792.0.0-weekly-updates-5", "main", "4792.0.0", "weekly-updates-5", False),
        ("main-9999.0.1-die-faster", "main", "9999.0.1", "die-faster", False),
        ("main-9999.0.1234-github-2345", "main", "9999.0.1234", "github-2345", False),
        ("alpha-3449.0.0-dev23", "alpha", "3449.0.0", "dev23", False),
    ],
)
def test_real_tags(tag, channel, vernum, build_id, official):
    version = parse_tag(tag)
    assert (version.channel, version.vernum, version.build_id, version.is_official) == (
        channel,
        vernum,
        build_id,
        official,
    )
    assert version.tag == tag == str(version)


def test_derived_forms_of_a_nightly():
    version = parse_tag("stable-4593.2.5-nightly-20260821-2100")
    assert version.versionfile_version == "4593.2.5+nightly-20260821-2100"
    assert version.docker_version == "4593.2.5-nightly-20260821-2100"
    assert version.minor_channel == "stable" and version.image_channel == "stable"
    assert version.is_nightly and not version.is_intermediate
    assert version.nightly.time == dt.datetime(2026, 8, 21, 21, 0, tzinfo=dt.UTC)


def test_main_is_a_developer_image_and_channel_follows_the_minor_number():
    version = parse_tag("main-4799.0.0-nightly-20260821-2100-INTERMEDIATE")
    assert version.image_channel == "developer"
    assert version.minor_channel == "alpha"
    assert version.is_intermediate and not version.is_nightly
    assert parse_version_number("4593.3.1").minor_channel == "lts"
    assert parse_version_number("4593.4.1").minor_channel is None


def test_version_numbers_in_all_spellings():
    assert parse_version_number("4593.2.5").versionfile_version == "4593.2.5"
    assert parse_version_number("4593.2.5+nightly-20260821-2100").build_id == "nightly-20260821-2100"
    assert parse_version_number("4593.2.5-nightly-20260821-2100").versionfile_version == (
        "4593.2.5+nightly-20260821-2100"
    )
    assert parse_any("4593.2.5").channel is None
    assert parse_any("stable-4593.2.5").channel == "stable"


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("stable-3033.0.0", "does not agree with minor number 0"),
        ("alpha-3033.2.0", "does not agree with minor number 2 of 3033.2.0 (denotes stable"),
        ("beta-3033.4.0", "denotes no release channel"),
        ("edge-3033.0.0", "'edge' is not one of main, alpha, beta, stable, lts"),
        ("main-3033.0", "must be <channel>-MMMM.m.p"),
        ("main-03033.0.0", "without leading zeros"),
        ("main-3033.0.0-", "must be <channel>-MMMM.m.p"),
        ("main-3033.0.0-nightly-2026-08-21", "must be 'nightly-YYYYMMDD-hhmm'"),
        ("main-3033.0.0-nightly-20260230-2100", "does not name a real date"),
        ("main-3033.0.0-nightly-20260821-2460", "does not name a real date"),
        ("main-3033.0.0-nightly-20260821-2100-intermediate", "optionally followed by '-INTERMEDIATE'"),
        ("main-3033.0.0-my_branch-", "must start and end with a letter or digit"),
        ("main-3033.0.0-fix.lock", "ends with '.lock'"),
        ("main-3033.0.0-a+b", "contains '+'"),
        ("main-3033.0.0-a..b", "contains '..'"),
        ("-main-3033.0.0", "starts with '-'"),
        ("main-3033.0.0-a b", "contains whitespace"),
        ("main-3033.0.0-a\tb", "control character"),
        ("main-3033.0.0-a\nb", "control character"),
        ("main-3033.0.0-$(reboot)", "shell metacharacter '$'"),
        ("main-3033.0.0-a;b", "shell metacharacter ';'"),
        ("main-3033.0.0-a/b", "shell metacharacter '/'"),
        ("main-3033.0.0-ä", "only ASCII letters"),
        ("main-3033.0.0-" + "x" * 120, "longer than 128 characters"),
        ("", "is empty"),
    ],
)
def test_invalid_versions_name_the_rule(text, rule):
    with pytest.raises(VersionError, match=".*" + __import__("re").escape(rule)):
        parse_any(text)


def test_non_strings_are_refused():
    with pytest.raises(VersionError, match="must be a string"):
        parse_tag(4593)


# -- nightly ----------------------------------------------------------------------------------------------


def test_main_major_is_days_since_2013_07_01():
    assert main_major(dt.date(2026, 8, 21)) == 4799
    assert main_major(dt.date(2013, 7, 2)) == 1
    assert main_major(dt.datetime(2026, 8, 22, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=5)))) == 4799


def test_main_nightly_for_a_run_time():
    when = dt.datetime(2026, 8, 21, 21, 0, tzinfo=dt.UTC)
    assert main_nightly(when).tag == "main-4799.0.0-nightly-20260821-2100"
    assert main_nightly(when, intermediate=True).tag == "main-4799.0.0-nightly-20260821-2100-INTERMEDIATE"


def test_nightly_build_id_is_utc():
    berlin = dt.datetime(2026, 8, 21, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert nightly_build_id(berlin) == "nightly-20260821-2100"


def test_branch_nightly_takes_channel_from_minor():
    when = dt.datetime(2026, 8, 21, 21, 0, tzinfo=dt.UTC)
    assert branch_nightly("4593.2.5", when).tag == "stable-4593.2.5-nightly-20260821-2100"
    assert branch_nightly("4790.0.0", when).tag == "alpha-4790.0.0-nightly-20260821-2100"
    assert branch_nightly("4459.1.2", when).tag == "beta-4459.1.2-nightly-20260821-2100"
    assert branch_nightly("4081.3.6", when).tag == "lts-4081.3.6-nightly-20260821-2100"
    with pytest.raises(VersionError, match="denotes no release channel"):
        branch_nightly("4081.4.6", when)
    with pytest.raises(VersionError, match="without a build id"):
        branch_nightly("4081.2.6+nightly-20260820-2100", when)


def test_run_time_prefers_the_logical_date_then_run_after():
    logical = dt.datetime(2026, 8, 21, 21, 0, tzinfo=dt.UTC)
    after = dt.datetime(2026, 11, 25, 8, 3, tzinfo=dt.UTC)
    assert run_time(logical, after) == logical
    assert run_time(None, after) == after
    with pytest.raises(VersionError, match="neither a logical date nor a run_after"):
        run_time(None, None)
    with pytest.raises(VersionError, match="no time zone"):
        run_time(dt.datetime(2026, 8, 21, 21, 0), None)


# -- version.txt ------------------------------------------------------------------------------------------


def test_versionfile_full_build_matches_the_scripts_output():
    version = parse_tag("main-4799.0.0-nightly-20260821-2100")
    assert VersionFile.for_full_build(version).render() == (
        "FLATCAR_VERSION=4799.0.0+nightly-20260821-2100\n"
        "FLATCAR_VERSION_ID=4799.0.0\n"
        'FLATCAR_BUILD_ID="nightly-20260821-2100"\n'
        "FLATCAR_SDK_VERSION=4799.0.0+nightly-20260821-2100\n"
    )


def test_versionfile_os_build_keeps_the_sdk():
    branch = VersionFile.create("4593.0.0", "stable-4593.2.4")
    new = VersionFile.for_os_build(branch, parse_tag("stable-4593.2.5-nightly-20260821-2100"))
    assert new.render() == (
        "FLATCAR_VERSION=4593.2.5+nightly-20260821-2100\n"
        "FLATCAR_VERSION_ID=4593.2.5\n"
        'FLATCAR_BUILD_ID="nightly-20260821-2100"\n'
        "FLATCAR_SDK_VERSION=4593.0.0\n"
    )
    assert not new.is_full_build


@pytest.mark.parametrize(
    ("args", "expected_sdk", "expected_os"),
    [
        (("alpha-3233.0.0-foo",), "3233.0.0+foo", "3233.0.0+foo"),
        (("3233.0.0-foo",), "3233.0.0+foo", "3233.0.0+foo"),
        (("4593.0.0", "beta-4593.1.0"), "4593.0.0", "4593.1.0"),
        (
            ("4799.0.0+nightly-20260821-2100", "lts-4081.3.6-rc1"),
            "4799.0.0+nightly-20260821-2100",
            "4081.3.6+rc1",
        ),
    ],
)
def test_create_accepts_the_spellings_create_versionfile_accepts(args, expected_sdk, expected_os):
    created = VersionFile.create(*args)
    assert (created.sdk.versionfile_version, created.os.versionfile_version) == (expected_sdk, expected_os)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("FLATCAR_VERSION=1.2.3\n", "lacks FLATCAR_VERSION_ID, FLATCAR_BUILD_ID, FLATCAR_SDK_VERSION"),
        (
            'FLATCAR_VERSION=1.2.3\nFLATCAR_VERSION_ID=1.2.4\nFLATCAR_BUILD_ID=""\nFLATCAR_SDK_VERSION=1.0.0\n',
            "does not agree",
        ),
        (
            'FLATCAR_VERSION=1.2.3-x\nFLATCAR_VERSION_ID=1.2.3\nFLATCAR_BUILD_ID="x"\nFLATCAR_SDK_VERSION=1.0.0\n',
            "must be written 1.2.3+x",
        ),
        ("rm -rf /\n", "expected one of"),
        ("FLATCAR_VERSION=1.2.3;reboot\n", "shell metacharacter"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_versionfile_parse_rejects_what_bash_would_misread(text, rule):
    with pytest.raises(VersionError, match=__import__("re").escape(rule)):
        VersionFile.parse(text)


# -- properties -------------------------------------------------------------------------------------------

_numbers = st.integers(min_value=0, max_value=99999)
_free_ids = st.from_regex(r"\A[A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?!\.)){0,30}[A-Za-z0-9]\Z").filter(
    lambda s: not s.lower().startswith("nightly") and ".." not in s and not s.endswith(".lock")
)
_nightly_ids = st.builds(
    lambda when, inter: nightly_build_id(when, intermediate=inter),
    st.datetimes(
        min_value=dt.datetime(2013, 7, 2), max_value=dt.datetime(2099, 12, 31), timezones=st.just(dt.UTC)
    ),
    st.booleans(),
)
_build_ids = st.one_of(st.just(""), _free_ids, _nightly_ids)


@st.composite
def versions(draw) -> FlatcarVersion:
    minor = draw(st.integers(min_value=0, max_value=3))
    channel = draw(st.sampled_from(["main", {0: "alpha", 1: "beta", 2: "stable", 3: "lts"}[minor]]))
    return FlatcarVersion(draw(_numbers), minor, draw(_numbers), draw(_build_ids), channel)


@given(versions())
def test_tag_round_trip(version):
    assert parse_tag(version.tag) == version
    assert parse_any(version.tag) == version


@given(versions())
def test_number_forms_round_trip(version):
    bare = version.with_channel(None)
    assert parse_version_number(version.versionfile_version) == bare
    assert parse_version_number(version.docker_version) == bare
    assert "+" not in version.docker_version


@given(versions(), versions())
def test_versionfile_round_trip(os_version, sdk_version):
    created = VersionFile.create(sdk_version.tag, os_version.tag)
    assert VersionFile.parse(created.render()) == created
    assert VersionFile.parse(created.render().encode()) == created


@given(
    st.datetimes(
        min_value=dt.datetime(2013, 7, 2), max_value=dt.datetime(2099, 12, 31), timezones=st.just(dt.UTC)
    )
)
def test_main_nightly_round_trips_its_time(when):
    version = main_nightly(when)
    assert parse_tag(version.tag).nightly.time == when.replace(second=0, microsecond=0)
    assert version.major == (when.date() - dt.date(2013, 7, 1)).days


_FORBIDDEN = st.one_of(
    st.sampled_from(list(" \t\n\r\x0b\x0c|&;<>()$`\\\"'*?[]#~=%!{}^,:@/\x00\x1b\x7f")),
    st.characters(blacklist_categories=("Lu", "Ll", "Nd"), min_codepoint=128),
    st.characters(whitelist_categories=("Cc", "Zs", "Zl", "Zp")),
)


@given(versions(), st.integers(min_value=0, max_value=200), _FORBIDDEN)
def test_no_string_with_a_forbidden_character_validates(version, position, bad):
    text = version.tag
    position %= len(text) + 1
    broken = text[:position] + bad + text[position:]
    with pytest.raises(VersionError):
        parse_any(broken)
    with pytest.raises(VersionError):
        parse_build_id(broken)


@given(versions(), st.integers(min_value=0, max_value=200))
def test_no_string_with_dot_dot_validates(version, position):
    text = version.tag
    position %= len(text) + 1
    with pytest.raises(VersionError):
        parse_any(text[:position] + ".." + text[position:])


@given(versions())
def test_no_string_with_a_leading_dash_validates(version):
    with pytest.raises(VersionError, match="starts with '-'"):
        parse_any("-" + version.tag)
    with pytest.raises(VersionError):
        parse_build_id("-" + (version.build_id or "x"))


@given(versions(), st.integers(min_value=1, max_value=300))
def test_nothing_longer_than_the_limit_validates(version, extra):
    text = version.tag + "-" + "a" * max(extra, MAX_LENGTH - len(version.tag))
    with pytest.raises(VersionError, match="longer than 128"):
        parse_any(text)
