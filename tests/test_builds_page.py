"""The builds page through Airflow's own api-server app (in process), against the real build cache server.

Airflow's FastAPI app (``create_app``, what ``airflow api-server`` serves) with the plugin mounted from its
entry point and Airflow's SimpleAuthManager; builds written into the real cache (HTTPS, nginx) as the
pipelines write them. The browser and the real api-server process are tests/test_builds_page_browser.py's.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import urllib.request
from html.parser import HTMLParser

import pytest
from connections import cache_connection
from sample_builds import sample_manifest, write_builds

from flatcar_airflow.buildindex.entries import sort_entries

CONN = "flatcar_buildcache_page"


class _Elements(HTMLParser):
    """Start tags with their attributes (enough to find what a person sees: links, rows, cells)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {name: value or "" for name, value in attrs}))


def elements(html: str, tag: str, cls: str | None = None) -> list[dict[str, str]]:
    parser = _Elements()
    parser.feed(html)
    return [
        attrs
        for name, attrs in parser.tags
        if name == tag and (cls is None or cls in attrs.get("class", "").split())
    ]


@pytest.fixture(scope="module")
def page_env(build_cache, airflow_db, tmp_path_factory):
    """Two branches of builds in the cache, a configuration naming them, Airflow's app and a login."""
    from fastapi.testclient import TestClient

    build_cache.clear()
    manifests = [
        sample_manifest("flatcar-4593", 0, channel="stable", base="4593.2.0", failing_tests=()),
        sample_manifest("flatcar-4593", 1, channel="stable", base="4593.2.0", slow=1.1),
        sample_manifest(
            "flatcar-4593", 2, channel="stable", base="4593.2.0", failed=("arm64", "image"), slow=1.3
        ),
        sample_manifest(
            "flatcar-4593",
            3,
            channel="stable",
            base="4593.2.0",
            run_type="manual",
            slow=1.6,
            failing_tests=("cl.network.ping",),
            flaky_tests=("cl.basic",),
        ),
    ] + [sample_manifest("main", n, channel="main", base="4901.0.0", run_type="backfill") for n in range(7)]
    entries = write_builds(build_cache.root, manifests)
    directory = tmp_path_factory.mktemp("builds-page")
    config = directory / "flatcar.yaml"
    config.write_text(
        "scripts_repo: https://github.com/flatcar/scripts.git\n"
        f"buildcache_conn_id: {CONN}\n"
        "full: {enabled: true, branch: main}\n"
        "os: {branches: [flatcar-4593]}\n"
        "web: {page_size: 5, cache_seconds: 0}\n"
    )
    environment = {
        "FLATCAR_AIRFLOW_CONFIG": str(config),
        f"AIRFLOW_CONN_{CONN.upper()}": json.dumps(cache_connection(build_cache)),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer,mainonly:viewer",
        "AIRFLOW__CORE__AUTH_MANAGER": "restricted_auth.OneDagAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(directory / "passwords.json"),
    }
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        from airflow.api_fastapi.app import create_app, purge_cached_app

        purge_cached_app()
        client = TestClient(create_app(), base_url="http://airflow.test")
        with client:
            passwords = json.loads((directory / "passwords.json").read_text())
            token = client.post(
                "/auth/token", json={"username": "viewer", "password": passwords["viewer"]}
            ).json()["access_token"]
            restricted = client.post(
                "/auth/token", json={"username": "mainonly", "password": passwords["mainonly"]}
            ).json()["access_token"]
            yield {
                "client": client,
                "token": token,
                "restricted": restricted,
                "entries": entries,
                "cache": build_cache,
            }
        purge_cached_app()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        build_cache.clear()


def _get(env, path, **kwargs):
    headers = {"Authorization": f"Bearer {env['token']}", **kwargs.pop("headers", {})}
    return env["client"].get(path, headers=headers, **kwargs)


def test_without_a_login_nothing_is_shown(page_env):
    client = page_env["client"]
    tag = page_env["entries"]["main"][0]["version_tag"]
    for path in ("/flatcar/", f"/flatcar/builds/{tag}", "/flatcar/branches/main"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/auth/login?next=%2Fflatcar%2F")
        assert tag not in response.text
    for path in ("/flatcar/api/builds", f"/flatcar/api/builds/{tag}", "/flatcar/badge/main.svg"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert tag not in response.text and "4901" not in response.text
    forged = page_env["token"][:-4] + "AAAA"
    response = client.get("/flatcar/api/builds", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401 and "4901" not in response.text
    # The UI's own cookie is a login too.
    response = client.get("/flatcar/api/builds", headers={"Cookie": f"_token={page_env['token']}"})
    assert response.status_code == 200 and response.json()["total"] == 11


def test_builds_are_listed_by_branch_and_channel_newest_first_with_filters_and_pages(page_env):
    response = _get(page_env, "/flatcar/")
    assert response.status_code == 200
    rows = elements(response.text, "tr", "build")
    # page_size 5: the 5 newest of 11 builds (the main backfills run on later days).
    newest = sort_entries(entry for entries in page_env["entries"].values() for entry in entries)[:5]
    assert [entry["run_time"][:10] for entry in newest] == [
        "2026-11-07", "2026-11-06", "2026-11-05", "2026-11-04", "2026-11-04"
    ]  # fmt: skip
    # Grouped by branch and channel, newest first within a group.
    expected = [e["version_tag"] for e in newest if e["branch"] == "main"] + [
        e["version_tag"] for e in newest if e["branch"] != "main"
    ]
    assert [row["data-tag"] for row in rows] == expected
    groups = elements(response.text, "section", "group")
    assert [(group["data-branch"], group["data-channel"]) for group in groups] == [
        ("main", "main"),
        ("flatcar-4593", "stable"),
    ]
    assert elements(response.text, "a", "next") and not elements(response.text, "a", "prev")
    assert "page 1 of 3" in response.text

    failed = _get(page_env, "/flatcar/?branch=flatcar-4593&state=failed")
    rows = elements(failed.text, "tr", "build")
    assert [(row["data-tag"], row["data-state"]) for row in rows] == [
        ("stable-4593.2.0-nightly-20261103-2100", "failed")
    ]
    cells = {(cell["data-arch"], cell["data-step"]): cell for cell in elements(failed.text, "td", "cell")}
    assert cells[("arm64", "image")]["data-state"] == "failed"
    assert cells[("arm64", "vms")]["data-state"] == "upstream_failed"
    assert cells[("amd64", "image")]["data-state"] == "success"
    # The recognised cause of the failure is next to the build's state.
    assert re.findall(
        r'<div class="cause" data-task-id="([^"]+)"><code>[^<]+</code>: ([^<]+)</div>', failed.text
    ) == [("arm64.image", "disk full on the build host")]
    logs = [a["href"] for a in elements(failed.text, "a", "log")]
    assert (
        "/dags/flatcar_os_flatcar_4593/runs/scheduled__2026-11-03T21%3A00%3A00%2B00%3A00/tasks/arm64.image"
        in logs
    )
    # The arm64 test did not run: only amd64 has test counts.
    assert [(t["data-arch"], t["data-passed"]) for t in elements(failed.text, "span", "tests")] == [
        ("amd64", "4")
    ]
    artifacts = [a["href"] for a in elements(failed.text, "a", "artifacts")]
    assert artifacts == [
        f"{page_env['cache'].https_url}/images/{arch}/4593.2.0+nightly-20261103-2100/"
        for arch in ("amd64", "arm64")
    ]
    commit = elements(failed.text, "a", "commit")[0]["href"]
    assert re.fullmatch(r"https://github\.com/flatcar/scripts/commit/[0-9a-f]{40}", commit)

    manual = _get(page_env, "/flatcar/?run_type=manual")
    assert [row["data-run-type"] for row in elements(manual.text, "tr", "build")] == ["manual"]
    # The form sends its "all" choices as empty values.
    form = _get(page_env, "/flatcar/?branch=&state=failed&run_type=")
    assert [row["data-state"] for row in elements(form.text, "tr", "build")] == ["failed"]
    assert _get(page_env, "/flatcar/?state=exploded").status_code == 422
    assert _get(page_env, "/flatcar/?branch=../../etc").status_code == 422


def test_a_build_page_shows_artifacts_tests_and_what_changed(page_env):
    tag = "stable-4593.2.0-nightly-20261104-2100"
    response = _get(page_env, f"/flatcar/builds/{tag}")
    assert response.status_code == 200
    assert tag in response.text
    links = [a["href"] for a in elements(response.text, "a", "artifact")]
    assert len(links) == 6  # two image files and the image changes report per arch
    context = ssl.create_default_context(cafile=str(page_env["cache"].ca_file))
    for link in links:
        assert link.startswith("https://")
        with urllib.request.urlopen(link, context=context, timeout=10) as answer:  # noqa: S310
            assert answer.status == 200 and answer.read().startswith((b"sample artifact", b"Image changes"))
    assert len(elements(response.text, "a", "digests")) == 4  # the report has no .DIGESTS
    failed = re.findall(r'<li class="failed-test">([^<]+)</li>', response.text)
    assert failed == ["cl.network.ping", "cl.network.ping"]  # amd64 and arm64
    assert 'data-flaky="1"' in response.text and "cl.basic" in response.text
    # The previous build of the branch (the failed one) and the commits in between.
    assert 'href="/flatcar/builds/stable-4593.2.0-nightly-20261103-2100"' in response.text
    compare = elements(response.text, "a", "compare")[0]["href"]
    assert re.fullmatch(
        r"https://github\.com/flatcar/scripts/compare/[0-9a-f]{40}\.\.\.[0-9a-f]{40}", compare
    )
    assert "newly failing" in response.text
    reports = re.findall(r'<pre class="image-changes" data-arch="(\w+)">([^<]*)</pre>', response.text)
    assert reports == [(arch, f"Image changes of {arch}: +app-misc/jq-1.7\n") for arch in ("amd64", "arm64")]
    assert _get(page_env, "/flatcar/builds/main-0.0.0-nope").status_code == 404
    assert _get(page_env, "/flatcar/builds/$(touch%20x)").status_code == 422


def test_branch_charts_have_one_point_per_build(page_env):
    response = _get(page_env, "/flatcar/branches/flatcar-4593")
    assert response.status_code == 200
    points = elements(response.text, "circle", "point")
    tags = {entry["version_tag"] for entry in page_env["entries"]["flatcar-4593"]}
    image = [p for p in points if p["data-series"] == "amd64.image"]
    assert {p["data-tag"] for p in image} == tags and len(image) == 4
    # The failed arm64 image has a duration, its upstream_failed vms does not: a gap, not a zero.
    assert len([p for p in points if p["data-series"] == "arm64.vms"]) == 3
    bars = elements(response.text, "rect", "bar")
    assert [bar["data-state"] for bar in bars] == ["success", "success", "failed", "success"]
    # 2 of the 3 nightlies succeeded (the manual build is drawn, not counted).
    assert "67% of the last 3 nightlies succeeded" in response.text


def test_the_json_api_answers_release_tooling(page_env):
    newest_stable = _get(
        page_env, "/flatcar/api/builds?channel=stable&state=success&run_type=scheduled&limit=1"
    ).json()
    assert newest_stable["total"] == 2
    assert [build["version_tag"] for build in newest_stable["builds"]] == [
        "stable-4593.2.0-nightly-20261102-2100"
    ]
    build = newest_stable["builds"][0]
    assert build["links"]["page"] == "/flatcar/builds/stable-4593.2.0-nightly-20261102-2100"
    assert set(build["links"]["artifacts"]) == {"amd64", "arm64"}
    one = _get(page_env, "/flatcar/api/builds/stable-4593.2.0-nightly-20261102-2100").json()
    assert one["previous"] == "stable-4593.2.0-nightly-20261101-2100"
    assert one["manifest"]["arches"]["amd64"]["image"]["state"] == "success"
    branches = _get(page_env, "/flatcar/api/branches").json()["branches"]
    assert [(b["branch"], b["builds"]) for b in branches] == [("main", 7), ("flatcar-4593", 4)]
    assert _get(page_env, "/flatcar/api/builds?limit=0").status_code == 422
    schema = page_env["client"].get("/flatcar/openapi.json").json()
    assert {"/api/builds", "/api/builds/{tag}", "/api/branches"} <= set(schema["paths"])
    # No secret of the connection and no ssh address reach an answer.
    text = json.dumps(_get(page_env, "/flatcar/api/builds?limit=1000").json())
    key = page_env["cache"].key_file.read_text().strip().splitlines()[1]
    assert key not in text and f":{page_env['cache'].ssh_port}" not in text


def test_badge_says_the_newest_builds_state(page_env):
    response = _get(page_env, "/flatcar/badge/flatcar-4593.svg")
    assert response.status_code == 200 and response.headers["content-type"].startswith("image/svg+xml")
    assert "passing 4593.2.0+nightly-20261104-2100" in response.text
    assert "no builds" in _get(page_env, "/flatcar/badge/nothing-here.svg").text


def test_links_to_the_scripts_repository_carry_no_credentials():
    from flatcar_airflow.config import parse_config

    config = parse_config("scripts_repo: https://x-access-token:ghp_s3cret@github.com/flatcar/scripts.git\n")
    link = config.web.link("compare_url", config.scripts_repo, old="a" * 40, new="b/c")
    assert link == f"https://github.com/flatcar/scripts/compare/{'a' * 40}...b%2Fc"
    ssh = parse_config("scripts_repo: git@github.com:flatcar/scripts.git\n")
    assert ssh.web.link("commit_url", ssh.scripts_repo, commit="abc") is None
    custom = parse_config(
        "scripts_repo: /srv/scripts.git\nweb: {commit_url: 'https://git.example/c/{commit}', tag_url: ''}\n"
    )
    assert custom.web.link("commit_url", custom.scripts_repo, commit="abc") == "https://git.example/c/abc"
    assert custom.web.link("tag_url", custom.scripts_repo, tag="t") is None
    with pytest.raises(ValueError, match="uses nope"):
        parse_config("scripts_repo: /srv/s.git\nweb: {commit_url: 'https://x/{nope}'}\n")


def test_builds_of_dags_the_user_may_not_read_are_not_shown(page_env):
    """The user ``mainonly`` may read the runs of flatcar_os_main only (tests/restricted_auth.py)."""
    headers = {"Authorization": f"Bearer {page_env['restricted']}"}
    client = page_env["client"]
    listing = client.get("/flatcar/api/builds?limit=1000", headers=headers).json()
    assert listing["total"] == 7 and {b["dag_id"] for b in listing["builds"]} == {"flatcar_os_main"}
    stable = page_env["entries"]["flatcar-4593"][0]["version_tag"]
    assert client.get(f"/flatcar/api/builds/{stable}", headers=headers).status_code == 404
    page = client.get(f"/flatcar/builds/{stable}", headers=headers)
    assert page.status_code == 404 and "4593.2.0+nightly" not in page.text
    assert "stable-" not in client.get("/flatcar/", headers=headers).text
    assert "no builds" in client.get("/flatcar/badge/flatcar-4593.svg", headers=headers).text


def test_the_garbage_collection_page_shows_the_last_report(page_env):
    cache = page_env["cache"]
    assert "No collection has run yet" in _get(page_env, "/flatcar/gc").text
    report = {
        "kind": "flatcar-airflow-gc-report",
        "generated_at": "2026-12-01T03:00:05+00:00",
        "dry_run": True,
        "result": "dry run",
        "keep": 50,
        "min_age_days": 14,
        "purge": [
            {
                "tag": "main-4700.0.0-nightly-20260901-2100",
                "version": "4700.0.0+nightly-20260901-2100",
                "branch": "main",
                "paths": [{"path": "images/amd64/4700.0.0+nightly-20260901-2100", "bytes": 123456}],
                "bytes": 123456,
            }
        ],
        "tags_to_delete": ["main-4700.0.0-nightly-20260901-2100"],
        "orphans": [{"path": "testing/4600.0.0+old", "bytes": 7}],
        "bytes_freed": 123463,
        "kept": {"stable-4593.2.0": "official release"},
        "refusals": [],
    }
    path = cache.path("flatcar-airflow/gc/report.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report))
    try:
        page = _get(page_env, "/flatcar/gc")
        assert page.status_code == 200
        assert [row["data-tag"] for row in elements(page.text, "tr") if "data-tag" in row] == [
            "main-4700.0.0-nightly-20260901-2100",
            "stable-4593.2.0",
        ]
        assert "123,463 bytes to free" in page.text and "testing/4600.0.0+old" in page.text
        assert "dry run" in page.text and "official release" in page.text
        listing = _get(page_env, "/flatcar/").text
        assert any(a.get("href") == "/flatcar/gc" for a in elements(listing, "a", "gc"))
        # A user who may not read the collection's DAG does not see its report.
        headers = {"Authorization": f"Bearer {page_env['restricted']}"}
        refused = page_env["client"].get("/flatcar/gc", headers=headers)
        assert refused.status_code == 403 and "4700.0.0" not in refused.text
        assert page_env["client"].get("/flatcar/gc", follow_redirects=False).status_code == 303
    finally:
        path.unlink()
