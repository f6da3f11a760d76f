"""The Flatcar builds page in a real headless Chromium, on builds a real scheduler made.

The module's fixture makes the builds once: a fresh miniature scripts origin with a second maintenance
branch (flatcar-4628, beta, next to flatcar-4593, stable), the session's build cache (emptied, with the
released SDK both branches build with), and Airflow 3.3 as separate processes (api-server with the flatcar
plugin, scheduler, dag-processor; LocalExecutor, SQLite, the simple auth manager with its login, not "all
admins") running the OS-only pipelines of both branches for amd64 and arm64 on the local runner. Three
manual builds are triggered at once through the REST API: two of flatcar-4593 (the branch lock builds
them one after the other; the first to build fails its arm64 image, ``MINI_FAIL_ONCE=image_build@arm64``)
and, next to them, one of flatcar-4628 for amd64 only (its arm64 steps are skipped). Every build has a
test that passes only on its re-run (``MINI_FLAKY_TESTS``). Airflow's REST API is the truth the page is
checked against.

Then Chromium (Debian's /usr/bin/chromium, driven by playwright) logs in through Airflow's own login page
with the generated admin password, as a person would, and reads the builds page, a build's page and a
branch's trends, directly and inside the Airflow UI (Browse → Flatcar builds). Every artifact link of a
build page is fetched over HTTPS with the cache's CA; the log link opens the task's log in the Airflow UI.
A browser without a login, curl and a client with a bad token get the login page or 401 and no build data.

Screenshots of every page go to ``$FA_TEST_ARTIFACTS`` (default: a directory under pytest's temporary
directory; the path is printed); with ``FA_UPDATE_SCREENSHOTS=1`` the README's three are also written to
docs/images/.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

import httpx
import pytest
import yaml
from airflow_servers import AirflowServers, airflow_env
from connections import CACHE_CONN, cache_connection
from gitrepos import VERSIONFILE, git
from infra import RELEASED_SDK_VERSION, make_mini_origin

ROOT = Path(__file__).resolve().parent.parent
BRANCH = "flatcar-4593"  # stable: two builds, the first to build fails on arm64
OTHER_BRANCH = "flatcar-4628"  # beta: one build, amd64 only
OTHER_VERSIONFILE = (
    'FLATCAR_VERSION=4628.1.0\nFLATCAR_VERSION_ID=4628.1.0\nFLATCAR_BUILD_ID=""\n'
    f"FLATCAR_SDK_VERSION={RELEASED_SDK_VERSION}\n"
)
DAGS = {BRANCH: "flatcar_os_flatcar_4593", OTHER_BRANCH: "flatcar_os_flatcar_4628"}
ARCHES = ("amd64", "arm64")
VENDOR = "qemu_uefi"
FLAKY_TEST = "cl.network.ping"
FAILED_ARCH, FAILED_STEP = "arm64", "image"
COMMIT_URL = "https://git.example.org/flatcar/scripts/commit/{commit}"
#: The OS-only pipeline's step tasks: each has a cell in a build's state matrix (the branch lock, the
#: version and the summary have none). A build page's steps table has them but "tag", whose outcome is in
#: its facts.
ARCH_STEPS = ("packages", "push_packages", "image", "vms", f"test_{VENDOR}", "image_changes")
STEP_TASKS = ("tag", "packages_tag", *(f"{arch}.{step}" for arch in ARCHES for step in ARCH_STEPS))
TABLE_STEPS = tuple(task_id for task_id in STEP_TASKS if task_id != "tag")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: The README's screenshots: name in docs/images → the page.
DOC_SCREENSHOTS = ("builds-page.png", "build-page.png", "branch-trends.png")
DOC_HEIGHT = 1700


# -- the builds -----------------------------------------------------------------------------------------


class Site:
    """What the module's tests see: Airflow, its builds (newest first, by tag) and the build cache."""

    def __init__(self, airflow: AirflowServers, build_cache, origin, artifacts: Path):
        self.airflow, self.build_cache, self.origin, self.artifacts = airflow, build_cache, origin, artifacts
        self.base = airflow.base_url
        #: tag -> {"branch", "dag_id", "run", "tis" (task instances by id), "commit", "tests" (per arch)}
        self.builds: dict[str, dict] = {}

    @property
    def tags(self) -> list[str]:
        return list(self.builds)

    def branch_tags(self, branch: str) -> list[str]:
        return [tag for tag, build in self.builds.items() if build["branch"] == branch]

    @property
    def failed_tag(self) -> str:
        (tag,) = [tag for tag, build in self.builds.items() if build["run"]["state"] == "failed"]
        return tag

    @property
    def newest_successful_tag(self) -> str:
        """The newest successful build of BRANCH (it has a previous build to compare with)."""
        return next(tag for tag in self.branch_tags(BRANCH) if self.builds[tag]["run"]["state"] == "success")

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


def _add_branch(origin, branch: str, versionfile: str) -> None:
    """A release engineer opens a maintenance branch: a commit with its version.txt, pushed."""
    with tempfile.TemporaryDirectory(prefix="new-branch-") as tmp:
        work = origin.clone(Path(tmp) / "work", "flatcar-4593")
        git("checkout", "-q", "-b", branch, cwd=work)
        (work / VERSIONFILE).write_text(versionfile)
        git("commit", "-q", "-am", f"{branch}: open the branch", cwd=work)
        git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=work)


def _trigger(airflow: AirflowServers, dag_id: str, build_id: str, **params) -> str:
    """A manual run through the REST API, as the UI's trigger form makes one."""
    triggered = airflow.api.post(
        f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": {"build_id": build_id, **params}}
    )
    assert triggered.status_code == 200, triggered.text
    return triggered.json()["dag_run_id"]


@pytest.fixture(scope="module")
def site(tmp_path_factory, build_cache, _released_sdk_tarballs, request):
    root = tmp_path_factory.mktemp("builds-page")
    artifacts = Path(os.environ.get("FA_TEST_ARTIFACTS") or root / "artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    origin = make_mini_origin(root / "scripts.git")
    _add_branch(origin, OTHER_BRANCH, OTHER_VERSIONFILE)
    # Other modules build flatcar-4593 too: this one starts (and leaves) the cache empty, so the builds
    # indexes hold this module's builds only.
    build_cache.clear()
    shutil.copytree(
        _released_sdk_tarballs, build_cache.path(f"containers/{RELEASED_SDK_VERSION}"), dirs_exist_ok=True
    )
    home = root / "airflow-home"
    home.mkdir()
    config = root / "flatcar.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "scripts_repo": str(origin.path),
                "buildcache_conn_id": CACHE_CONN,
                "runner": {"type": "local", "root": str(root / "build-root")},
                "tagging_cache": str(root / "tag-cache"),
                "arches": {arch: {"formats": ["qemu_uefi"], "test_vendors": [VENDOR]} for arch in ARCHES},
                "full": {"enabled": False},
                "os": {"branches": list(DAGS), "arches": list(ARCHES), "schedule": None},
                "image_changes": "last-nightly",
                "retries": 0,
                "start_date": "2026-01-01",
                "branch_lock": {"poke_interval": 3},
                "preflight": {"min_free_gb": 1, "network": "off"},
                "pools": {
                    "steps": {"name": "flatcar_build_steps", "slots": 4},
                    "tagging": {"name": "flatcar_tagging", "slots": 1},
                },
                "step_env": {
                    "MINI_FAIL_ONCE": f"{FAILED_STEP}_build@{FAILED_ARCH}",
                    "MINI_STATE_DIR": str(root / "mini-state"),
                    "MINI_FLAKY_TESTS": FLAKY_TEST,
                },
                "web": {"commit_url": COMMIT_URL, "cache_seconds": 0},
            }
        )
    )
    env = airflow_env(
        home,
        config,
        all_admins=False,
        **{f"AIRFLOW_CONN_{CACHE_CONN.upper()}": json.dumps(cache_connection(build_cache))},
    )
    airflow = AirflowServers(home, env)
    started = time.monotonic()
    airflow.cli("db", "migrate")
    try:
        airflow.start("api-server")
        airflow.start("scheduler")
        airflow.start("dag-processor")
        airflow.wait_healthy()
        airflow.login()
        airflow.set_pools(steps_slots=4)
        for dag_id in DAGS.values():
            airflow.wait_for_dag(dag_id)
            assert airflow.api.patch(f"/dags/{dag_id}", json={"is_paused": False}).status_code == 200
        for build_id in ("page-1", "page-2"):
            _trigger(airflow, DAGS[BRANCH], build_id)
        # The other branch's build (amd64 only: it has no arm64 image to fail) runs next to them.
        _trigger(airflow, DAGS[OTHER_BRANCH], "page-3", arches=["amd64"])
        runs = [
            (branch, run)
            for branch, dag_id in DAGS.items()
            for run in airflow.wait_for_runs({BRANCH: 2, OTHER_BRANCH: 1}[branch], 600, dag_id)
        ]
        built = time.monotonic() - started
        site = Site(airflow, build_cache, origin, artifacts)
        # Newest first, as the page lists them: a manual run's time is when it was triggered.
        for branch, run in sorted(runs, key=lambda pair: pair[1]["run_after"], reverse=True):
            dag_id, run_id = DAGS[branch], run["dag_run_id"]
            tag = airflow.xcom(run_id, "version", dag_id)["version"]
            tis = airflow.task_instances(run_id, dag_id)
            site.builds[tag] = {
                "branch": branch,
                "dag_id": dag_id,
                "arches": sorted((run.get("conf") or {}).get("arches") or ARCHES),
                "run": run,
                "tis": tis,
                "commit": origin.tag_commit(tag),
                "tests": {
                    arch: airflow.xcom(run_id, f"{arch}.test_{VENDOR}", dag_id)["tests"]
                    for arch in ARCHES
                    if tis[f"{arch}.test_{VENDOR}"]["state"] == "success"
                },
            }
        states = {tag: build["run"]["state"] for tag, build in site.builds.items()}
        assert sorted(states.values()) == ["failed", "success", "success"], states
        assert site.builds[site.failed_tag]["branch"] == BRANCH
        failed_tis = site.builds[site.failed_tag]["tis"]
        assert failed_tis[f"{FAILED_ARCH}.{FAILED_STEP}"]["state"] == "failed"
        assert {ti["state"] for task_id, ti in failed_tis.items() if task_id.startswith("amd64.")} == {
            "success"
        }
        _report(request, f"builds page: {len(runs)} builds in {built:.0f} s; screenshots in {artifacts}")
        yield site
    finally:
        airflow.stop()
        build_cache.clear()


def _report(request, line: str) -> None:
    """A line on the terminal, also without -s (output capture is suspended for it)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line(f"\n[{Path(__file__).name}] {line}")


# -- the browser ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium; scripts/run-tests.sh does it)")
    with sync_playwright() as playwright:
        # Playwright gives every launch a new empty profile (its own --user-data-dir).
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _login(page, site: Site, target: str) -> None:
    """Open ``target``; on Airflow's login page type the admin's generated password and sign in."""
    page.goto(site.url(target))
    page.wait_for_url(re.compile(r"/auth/login"))
    page.get_by_label(re.compile("username", re.I)).fill("admin")
    page.get_by_label(re.compile("password", re.I)).fill(site.airflow.password("admin"))
    page.get_by_role("button", name=re.compile("sign in|log ?in", re.I)).click()
    page.wait_for_url(lambda url: urllib.parse.urlsplit(url).path == target, timeout=30_000)


@pytest.fixture(scope="module")
def user(chromium, site):
    """A browser context of a user who logged in through Airflow's login page (sent there by the page)."""
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    _login(page, site, "/flatcar/")
    yield context
    context.close()


@pytest.fixture
def page(user):
    page = user.new_page()
    yield page
    page.close()


def _screenshot(page, site: Site, name: str, full_page: bool = True) -> None:
    """The page into the artifacts directory; the docs' copy (FA_UPDATE_SCREENSHOTS=1) cut at DOC_HEIGHT."""
    page.screenshot(path=str(site.artifacts / name), full_page=full_page)
    if os.environ.get("FA_UPDATE_SCREENSHOTS") == "1" and name in DOC_SCREENSHOTS:
        docs = ROOT / "docs" / "images"
        docs.mkdir(parents=True, exist_ok=True)
        width, height = page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
        )
        clip = {"x": 0, "y": 0, "width": width, "height": min(height, DOC_HEIGHT)}
        page.screenshot(path=str(docs / name), full_page=True, clip=clip)


def _rows(page) -> dict[str, object]:
    """The builds listed on the page: tag → its ``tr.build`` locator, in page order."""
    rows = page.locator("tr.build")
    return {rows.nth(i).get_attribute("data-tag"): rows.nth(i) for i in range(rows.count())}


def _task_id(step: str, arch: str) -> str:
    return f"{arch}.{step}" if arch else step


def _path(href: str) -> str:
    """The path of a link, unquoted (run ids have ':' and '+')."""
    return urllib.parse.unquote(urllib.parse.urlsplit(href).path)


def _version(tag: str) -> str:
    """A tag's version.txt form: stable-4593.2.4-page-1 -> 4593.2.4+page-1."""
    return tag.split("-", 1)[1].replace("-", "+", 1)


# -- refused without a login ---------------------------------------------------------------------------


def test_a_browser_without_a_login_is_sent_to_the_login_page_and_sees_no_build(chromium, site):
    context = chromium.new_context()
    try:
        page = context.new_page()
        for path in ("/flatcar/", f"/flatcar/builds/{site.failed_tag}", f"/flatcar/branches/{BRANCH}"):
            page.goto(site.url(path))
            page.wait_for_url(re.compile(r"/auth/login"))
            assert urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query)["next"][0].endswith(path)
            page.get_by_label(re.compile("password", re.I)).wait_for()
            html = page.content()
            assert not [tag for tag in site.tags if tag in html], path
            assert page.locator("tr.build").count() == 0
        _screenshot(page, site, "login-page.png")
        for path in (
            "/flatcar/api/builds",
            f"/flatcar/api/builds/{site.failed_tag}",
            f"/flatcar/badge/{BRANCH}.svg",
        ):
            response = context.request.get(site.url(path))
            assert response.status == 401, (path, response.status)
            assert not [tag for tag in site.tags if tag in response.text()], path
    finally:
        context.close()


def test_curl_and_a_bad_token_get_401_or_the_login_and_no_build_data(site):
    for path in (
        "/flatcar/",
        "/flatcar/api/builds",
        f"/flatcar/api/builds/{site.failed_tag}",
        f"/flatcar/badge/{BRANCH}.svg",
    ):
        curl = subprocess.run(
            ["curl", "-sS", "-o", "-", "-w", "\n%{http_code} %{redirect_url}", site.url(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        body, _, status_line = curl.stdout.rpartition("\n")
        status, _, location = status_line.partition(" ")
        if path == "/flatcar/":
            assert status in ("302", "303", "307"), (path, status_line)
            assert "/auth/login" in location, location
        else:
            assert status == "401", (path, status_line)
        assert not [tag for tag in site.tags if tag in body], (path, body[:500])
        bad = httpx.get(site.url(path), headers={"Authorization": "Bearer not-a-token"}, timeout=30)
        assert bad.status_code in (401, 302, 303, 307), (path, bad.status_code)
        assert not [tag for tag in site.tags if tag in bad.text], path


# -- the builds page -----------------------------------------------------------------------------------


def test_builds_page_lists_every_build_by_branch_newest_first_with_its_states(page, site):
    page.goto(site.url("/flatcar/"))
    _screenshot(page, site, "builds-page.png")
    rows = _rows(page)
    assert sorted(rows) == sorted(site.tags)
    # Grouped by branch and channel, newest first in each group.
    for branch, channel in ((BRANCH, "stable"), (OTHER_BRANCH, "beta")):
        group = page.locator(f"section.group[data-branch='{branch}']")
        assert channel in group.locator("h2").inner_text()
        listed = group.locator("tr.build").evaluate_all("rows => rows.map(r => r.dataset.tag)")
        assert listed == site.branch_tags(branch)

    for tag, build in site.builds.items():
        row, run, tis = rows[tag], build["run"], build["tis"]
        assert row.get_attribute("data-branch") == build["branch"]
        assert row.get_attribute("data-state") == run["state"]
        assert row.get_attribute("data-run-type") == "manual"
        assert tag in row.locator("a.tag").inner_text()
        assert row.locator("a.commit").get_attribute("href") == COMMIT_URL.format(commit=build["commit"])
        run_href = row.locator("a.run").get_attribute("href")
        assert _path(run_href) == f"/dags/{build['dag_id']}/runs/{run['dag_run_id']}"

        # One cell per step and arch, in the state Airflow has for its task.
        cells = row.locator("td.cell")
        seen = {}
        for i in range(cells.count()):
            cell = cells.nth(i)
            step, arch = cell.get_attribute("data-step"), cell.get_attribute("data-arch") or ""
            classes = cell.get_attribute("class").split()
            seen[_task_id(step, arch)] = [c.removeprefix("state-") for c in classes if c.startswith("state-")]
        # Every cell is in the state of its task in Airflow; every step task has one (a check task of
        # the run, such as a preflight, may have one too).
        assert seen == {task_id: [tis[task_id]["state"]] for task_id in seen}, tag
        assert set(STEP_TASKS) <= set(seen), (tag, sorted(seen))
        assert {states[0] for task_id, states in seen.items() if "." not in task_id} == {"success"}, seen
        for arch in ARCHES:
            arch_states = {states[0] for task_id, states in seen.items() if task_id.startswith(f"{arch}.")}
            if tag == site.failed_tag and arch == FAILED_ARCH:
                assert seen[f"{arch}.{FAILED_STEP}"] == ["failed"]
                assert seen[f"{arch}.test_{VENDOR}"] == ["upstream_failed"]
                assert arch_states == {"success", "failed", "upstream_failed"}
            elif arch in build["arches"]:
                assert arch_states == {"success"}, (tag, arch, seen)
            else:  # an arch left out of the run
                assert arch_states == {"skipped"}, (tag, arch, seen)

        # Test results per arch and vendor as the test tasks counted them (the flaky one passed on a re-run).
        tests = row.locator("span.tests")
        counts = {
            (tests.nth(i).get_attribute("data-arch"), tests.nth(i).get_attribute("data-vendor")): tuple(
                tests.nth(i).get_attribute(f"data-{key}") for key in ("passed", "failed", "flaky")
            )
            for i in range(tests.count())
        }
        assert counts == {
            (arch, VENDOR): (str(summary["passed"]), "0", "1") for arch, summary in build["tests"].items()
        }, (tag, counts)
        tested = [a for a in build["arches"] if tag != site.failed_tag or a != FAILED_ARCH]
        assert sorted(build["tests"]) == tested

        # Each arch the run built links its directory in the cache (the failed arch's has the manifest).
        links = {a.get_attribute("href").rstrip("/") for a in row.locator("a.artifacts").all()}
        assert links == {site.build_cache.url(f"images/{a}/{_version(tag)}") for a in build["arches"]}
        for link in links:
            assert site.build_cache.head(urllib.parse.urlsplit(link).path + "/") == 200, link
    # Three builds fit on one page (page_size is at least 5): no link to another page.
    assert page.locator("nav.pages a.next, nav.pages a.prev").count() == 0


def test_the_filters_narrow_the_list(page, site):
    page.goto(site.url("/flatcar/"))
    form = page.locator("form#filters")
    options = form.locator("select[name=branch] option").evaluate_all("options => options.map(o => o.value)")
    assert set(DAGS) <= set(options), options
    # Every filter chosen in the form.
    form.locator("select[name=branch]").select_option(BRANCH)
    form.locator("select[name=state]").select_option("failed")
    form.locator("select[name=run_type]").select_option("manual")
    _submit(page, form)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query)
    assert query == {"branch": [BRANCH], "state": ["failed"], "run_type": ["manual"]}
    assert list(_rows(page)) == [site.failed_tag]
    form = page.locator("form#filters")
    assert form.locator("select[name=state]").input_value() == "failed"  # the filters stay chosen
    form.locator("select[name=state]").select_option("success")
    _submit(page, form)
    assert list(_rows(page)) == [t for t in site.branch_tags(BRANCH) if t != site.failed_tag]

    # The filters' addresses, as bookmarked or shared.
    for query, expected in (
        ("state=failed", [site.failed_tag]),
        (f"branch={OTHER_BRANCH}", site.branch_tags(OTHER_BRANCH)),
        (f"branch={BRANCH}&state=success", [t for t in site.branch_tags(BRANCH) if t != site.failed_tag]),
        ("run_type=scheduled", []),
    ):
        page.goto(site.url(f"/flatcar/?{query}"))
        assert list(_rows(page)) == expected, query
    assert not [tag for tag in site.tags if tag in page.content()]  # nothing scheduled: no build named
    page.goto(site.url("/flatcar/?run_type=manual"))
    assert sorted(_rows(page)) == sorted(site.tags)
    # A page past the end shows the last one.
    page.goto(site.url("/flatcar/?page=2"))
    assert sorted(_rows(page)) == sorted(site.tags)
    assert page.locator("nav.pages").inner_text().strip() == "page 1 of 1"


def test_the_filter_form_with_all_in_some_of_its_choices(page, site):
    page.goto(site.url("/flatcar/"))
    form = page.locator("form#filters")
    form.locator("select[name=state]").select_option("failed")  # branch and run type: all
    _submit(page, form)
    assert list(_rows(page)) == [site.failed_tag], page.content()[:500]


def _submit(page, form) -> None:
    """Submit the filters as a person would: its button, or Enter in the form."""
    with page.expect_navigation():
        button = form.locator("button, input[type=submit]")
        if button.count():
            button.first.click()
        else:
            form.locator("select[name=state]").press("Enter")


def test_builds_page_inside_the_airflow_ui(page, site):
    page.goto(site.url("/"))
    page.get_by_role("button", name=re.compile("browse", re.I)).click()
    page.get_by_role("menuitem", name=re.compile("flatcar builds", re.I)).click()
    page.wait_for_url(re.compile(r"/plugin/flatcar-builds$"))
    frame = page.frame_locator("iframe")
    frame.locator("tr.build").first.wait_for()
    assert [
        frame.locator("tr.build").nth(i).get_attribute("data-tag") for i in range(len(site.tags))
    ] == site.tags
    _screenshot(page, site, "airflow-ui-builds.png", full_page=False)


def test_log_link_opens_the_failed_tasks_log_in_airflow(page, site):
    page.goto(site.url("/flatcar/"))
    row = _rows(page)[site.failed_tag]
    cell = row.locator(f"td.cell[data-step={FAILED_STEP}][data-arch={FAILED_ARCH}]")
    href = cell.locator("a.log").get_attribute("href")
    build = site.builds[site.failed_tag]
    expected = f"/dags/{build['dag_id']}/runs/{build['run']['dag_run_id']}/tasks/{FAILED_ARCH}.{FAILED_STEP}"
    assert _path(href) == expected
    page.goto(urllib.parse.urljoin(page.url, href))
    page.get_by_text(f"mini-scripts: failing {FAILED_STEP}_build on {FAILED_ARCH} as asked").first.wait_for(
        timeout=60_000
    )
    _screenshot(page, site, "task-log.png", full_page=False)


# -- a build's page ----------------------------------------------------------------------------------------


def test_build_page_shows_artifacts_steps_tests_image_changes_and_the_comparison(page, site):
    tag = site.newest_successful_tag
    build = site.builds[tag]
    page.goto(site.url("/flatcar/"))
    _rows(page)[tag].locator("a.tag").click()
    page.wait_for_url(re.compile(re.escape(urllib.parse.quote(tag)) + "$"))
    assert tag in page.locator("h1").inner_text()
    _screenshot(page, site, "build-page.png")

    # Every artifact is a file in the cache, served over HTTPS with the cache's CA, of the size shown.
    artifacts = page.locator("table#artifacts tr.artifact")
    assert artifacts.count() >= 10
    digests = 0
    with httpx.Client(verify=site.build_cache.ssl_context(), timeout=60) as cache:
        for i in range(artifacts.count()):
            artifact = artifacts.nth(i)
            href = artifact.locator("a.artifact").get_attribute("href")
            assert href.startswith(f"{site.build_cache.https_url}/"), href
            response = cache.get(href)
            assert response.status_code == 200 and response.content, (href, response.status_code)
            size = artifact.locator("td.size")
            if size.get_attribute("data-bytes"):
                assert int(size.get_attribute("data-bytes")) == len(response.content), href
            _check_size(size.inner_text(), len(response.content), href)
            # The SHA-512 shown is the file's, and links the .DIGESTS file that has it.
            digest = artifact.locator("td.digest a.digests")
            if digest.count():
                sha512 = digest.get_attribute("title").removeprefix("SHA-512 ").strip()
                assert hashlib.sha512(response.content).hexdigest() == sha512, href
                assert digest.inner_text().startswith(f"sha512:{sha512[:16]}"), href
                digests_file = cache.get(digest.get_attribute("href"))
                assert digests_file.status_code == 200 and sha512 in digests_file.text, href
                digests += 1

    assert digests >= 10  # the images' digests (from their .DIGESTS files) are the files' own

    # The steps that ran, each with its duration.
    steps = page.locator("table#steps tr.step")
    listed = {steps.nth(i).get_attribute("data-task-id"): steps.nth(i) for i in range(steps.count())}
    step_tasks = set(TABLE_STEPS)
    assert step_tasks <= set(listed), sorted(step_tasks - set(listed))
    for task_id in step_tasks:
        assert re.search(r"\d", listed[task_id].locator("td.duration").inner_text()), task_id

    # The test results per arch and vendor, with the test that passed only on its re-run named.
    tests = page.locator("section#tests")
    text = tests.inner_text()
    assert VENDOR in text and all(arch in text for arch in ARCHES)
    for arch in ARCHES:
        summary = tests.locator(f"[data-arch={arch}][data-vendor={VENDOR}]")
        counts = [summary.get_attribute(f"data-{key}") for key in ("passed", "failed", "flaky")]
        assert counts == [str(build["tests"][arch][key]) for key in ("passed", "failed", "flaky")]
        assert build["tests"][arch]["flaky"] == 1 and build["tests"][arch]["failed"] == 0
    assert tests.locator(".flaky-test").all_inner_texts() == [FLAKY_TEST] * len(ARCHES)
    assert tests.locator("li.failed-test").count() == 0  # the flaky test passed on its re-run

    for arch in ARCHES:
        report = page.locator(f"section#image-changes pre.image-changes[data-arch={arch}]")
        log = site.airflow.api.get(
            f"/dags/{build['dag_id']}/dagRuns/{build['run']['dag_run_id']}/taskInstances/{arch}.image_changes/logs/1",
            headers={"Accept": "application/json"},
        )
        assert log.status_code == 200
        first_line = report.inner_text().strip().splitlines()[0]
        assert first_line and first_line in log.text, (first_line, log.text[-2000:])

    # Compared with the build before it on its branch (the other branch's build is newer, not before it).
    older = site.branch_tags(BRANCH)[site.branch_tags(BRANCH).index(tag) + 1]
    assert page.locator("section#compare a.previous").inner_text() == older

    html = page.content()
    assert str(site.build_cache.root) not in html  # the cache's internal path prefix
    assert site.build_cache.key_file.read_text().splitlines()[1] not in html  # no part of the write key


def test_failed_build_page_shows_the_failed_step(page, site):
    tag = site.failed_tag
    page.goto(site.url(f"/flatcar/builds/{urllib.parse.quote(tag)}"))
    assert tag in page.locator("h1").inner_text()
    steps = page.locator("table#steps tr.step")
    states = dict(steps.evaluate_all("rows => rows.map(r => [r.dataset.taskId, r.dataset.state])"))
    tis = site.builds[tag]["tis"]
    assert {t: states.get(t) for t in TABLE_STEPS} == {t: tis[t]["state"] for t in TABLE_STEPS}
    assert states[f"{FAILED_ARCH}.{FAILED_STEP}"] == "failed"
    assert "No test results" not in page.locator("section#tests").inner_text()  # amd64 tested
    # amd64's images are there and resolve; arm64 has none.
    hrefs = page.locator("table#artifacts a.artifact").evaluate_all("links => links.map(a => a.href)")
    assert any("/images/amd64/" in href for href in hrefs)
    assert not any(f"/images/{FAILED_ARCH}/" in href for href in hrefs)
    _screenshot(page, site, "failed-build-page.png")


def _check_size(shown: str, size: int, href: str) -> None:
    """``shown`` is the byte count, or a rounded one with a unit (B, KiB, MiB, kB, MB)."""
    match = re.search(r"([\d.,]+)\s*([KMG]i?B|[kMG]B|B|bytes)?", shown)
    assert match, (shown, href)
    number = float(match.group(1).replace(",", ""))
    unit = (match.group(2) or "B").replace("bytes", "B")
    scale = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}
    assert abs(number * scale[unit] - size) <= max(0.06 * size, 1), (shown, size, href)


# -- trends ------------------------------------------------------------------------------------------------


def test_branch_trends_chart_one_point_per_build(page, site):
    page.goto(site.url(f"/flatcar/branches/{BRANCH}"))
    chart = page.locator("svg#durations")
    box = chart.bounding_box()
    assert box and box["width"] > 100 and box["height"] > 50  # drawn, not just in the markup
    points = chart.locator("circle.point")
    series: dict[str, list[str]] = {}
    for name, tag in points.evaluate_all("points => points.map(p => [p.dataset.series, p.dataset.tag])"):
        series.setdefault(name, []).append(tag)
    assert series, "no points"
    for name, tags in series.items():
        assert len(tags) == len(set(tags)), (name, tags)  # one point per build
        assert set(tags) <= set(site.branch_tags(BRANCH)), (name, tags)  # this branch's builds only
    # The steps every build of the branch ran have a point for each build.
    everywhere = {name for name, tags in series.items() if set(tags) == set(site.branch_tags(BRANCH))}
    assert {"packages_tag", "amd64.image", "amd64.vms"} <= everywhere, series
    rate = page.locator("svg#success-rate")
    assert rate.bounding_box()["width"] > 50
    _screenshot(page, site, "branch-trends.png")


# -- the JSON API and the badge --------------------------------------------------------------------------


def test_json_api_and_badge_with_a_token(site):
    token = site.airflow.token()
    with httpx.Client(
        base_url=site.url("/flatcar"), headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as api:
        listing = api.get("/api/builds").json()
        assert listing["total"] == 3 and [b["version_tag"] for b in listing["builds"]] == site.tags
        failed = api.get("/api/builds", params={"state": "failed"}).json()
        assert [b["version_tag"] for b in failed["builds"]] == [site.failed_tag]
        newest_success = next(t for t in site.tags if site.builds[t]["run"]["state"] == "success")
        answer = api.get("/api/builds", params={"state": "success", "limit": 1}).json()
        assert [b["version_tag"] for b in answer["builds"]] == [newest_success] and answer["total"] == 2
        newest, older = site.branch_tags(BRANCH)
        one = api.get(f"/api/builds/{newest}").json()
        assert one["build"]["version_tag"] == newest and one["previous"] == older
        assert one["manifest"]["run_id"] == site.builds[newest]["run"]["dag_run_id"]
        (other,) = site.branch_tags(OTHER_BRANCH)
        assert api.get(f"/api/builds/{other}").json()["previous"] is None
        beta = api.get("/api/builds", params={"channel": "beta"}).json()
        assert [b["version_tag"] for b in beta["builds"]] == [other]
        assert api.get("/api/builds/stable-4593.2.4-no-such-build").status_code == 404
        assert "/api/builds" in " ".join(api.get("/openapi.json").json()["paths"])
        # The badge tells the state of the branch's newest build and its version.
        badge = api.get(f"/badge/{BRANCH}.svg")
        assert badge.status_code == 200 and badge.headers["content-type"].startswith("image/svg+xml")
        word = {"success": "passing", "failed": "failing"}[site.builds[newest]["run"]["state"]]
        assert badge.text.startswith("<svg") and f"{word} {_version(newest)}" in badge.text
