"""The trust boundaries between configuration, connections and the step wrapper (issue 10, section 5).

Each test names the hole it closes: a value that reached a line-based file (the job's ssh config), the
wrapper's own variables taken over by a step's environment, a cache setting that broke every ssh of a
step, and a pattern whose ``$`` let a final newline through. The wrapper tests run the real
``flatcar-step.sh`` with the local runner (or directly, for its own defensive checks) on a tiny origin.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
from gitrepos import commit_file, git, make_origins

from flatcar_airflow.buildindex.entries import index_path
from flatcar_airflow.runners.base import Job, render_job_env, wrapper_script
from flatcar_airflow.runners.local import LocalRunner, host_paths
from flatcar_airflow.scripts_repo import check_ref_name
from flatcar_airflow.versions import parse_any

#: The probe step shows what its ssh would do for the cache (``ssh -G`` resolves the configuration
#: without connecting) and then runs one ssh through it, which is where a ProxyCommand would run.
PROBE = r"""# >>> This file is supposed to be SOURCED from the repository ROOT. <<<
function probe() {
    echo "function=probe args=$*"
    ssh -G "${BUILDCACHE_SERVER}" 2>&1 | grep -E '^(port|user|hostname|proxycommand) ' || echo "ssh-G-failed"
    ssh -o BatchMode=yes -o ConnectTimeout=1 "${BUILDCACHE_SERVER}" true 2>/dev/null
    echo "probe done"
}
"""
REF = "main-4799.0.0-probe"


@pytest.fixture(scope="module")
def probe_origin(tmp_path_factory) -> str:
    origins = make_origins(tmp_path_factory.mktemp("trust") / "origins")
    commit_file(origins.work, "ci-automation/probe.sh", PROBE, "probe step")
    git("tag", REF, cwd=origins.work)
    git("push", "-q", "origin", "main", REF, cwd=origins.work)
    return origins.url


def _job(origin: str, canary: Path, *, cache: dict[str, str], **env: str) -> Job:
    return Job(
        key="trust-job",
        attempt=1,
        origin=origin,
        ref=REF,
        script="ci-automation/probe.sh",
        function="probe",
        args=["amd64"],
        env={"BUILDCACHE_SERVER": "127.0.0.1", "CANARY": str(canary), **env},
        cache=cache,
    )


def _run(root: Path, job: Job) -> tuple[int, list[str]]:
    lines: list[str] = []
    outcome = LocalRunner(root=str(root)).run(job, lambda out: lines.extend(out.split("\n")), lambda: None)
    return outcome.rc, lines


_PROXY = "bincache\nHost *\n    ProxyCommand touch {canary}"


def test_a_cache_login_with_ssh_config_lines_is_refused_before_the_job_is_written(tmp_path, probe_origin):
    """The login once went unescaped into the job's ssh config: ``ssh`` of the step ran the ProxyCommand."""
    canary = tmp_path / "canary"
    cache = {
        "server": "127.0.0.1",
        "port": "2222",
        "user": _PROXY.format(canary=canary),
        "path_prefix": "/srv",
    }
    with pytest.raises(ValueError, match="build cache setting user"):
        _run(tmp_path / "root", _job(probe_origin, canary, cache=cache))
    assert not canary.exists()
    for bad in (
        {"server": "127.0.0.1\nHost *"},
        {"port": "22 -oProxyCommand=x"},
        {"path_prefix": "/srv/../x"},
    ):
        with pytest.raises(ValueError, match="build cache setting"):
            render_job_env(
                _job(probe_origin, canary, cache={**cache, "user": "u", **bad}), mirror="m", workspace="w"
            )


def test_the_wrapper_itself_refuses_ssh_config_lines_in_a_job_env(tmp_path, probe_origin):
    """Defence in depth: a job.env written by anything else still cannot add ssh options."""
    canary = tmp_path / "canary"
    job = _job(
        probe_origin,
        canary,
        cache={"server": "127.0.0.1", "port": "2222", "user": "u", "path_prefix": "/srv"},
    )
    mirror, workspace, job_dir = host_paths(str(tmp_path / "root"), job)
    env = render_job_env(job, mirror=mirror, workspace=workspace)
    hostile = shlex.quote(_PROXY.format(canary=canary))
    env = env.replace("FLATCAR_JOB_CACHE_USER=u\n", f"FLATCAR_JOB_CACHE_USER={hostile}\n")
    assert hostile in env
    Path(job_dir).mkdir(parents=True)
    (Path(job_dir) / "job.env").write_text(env)
    (Path(job_dir) / "flatcar-step.sh").write_text(wrapper_script())

    proc = subprocess.run(
        ["bash", f"{job_dir}/flatcar-step.sh", job_dir],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )

    assert proc.returncode != 0
    assert "the build cache user is not a user name" in proc.stdout
    assert "function=probe" not in proc.stdout
    assert not canary.exists()


@pytest.mark.parametrize(
    "env",
    [
        {"FLATCAR_JOB_FUNCTION": "touch", "FLATCAR_JOB_ARGS": "{canary}"},
        {"FLATCAR_JOB_WORKSPACE": "{victim}"},
        {"FLATCAR_JOB_KEEP_WORKSPACE": "1"},
    ],
)
@pytest.mark.parametrize("where", ["env", "secret_env"])
def test_a_step_environment_cannot_take_over_the_wrappers_variables(tmp_path, probe_origin, env, where):
    """``FLATCAR_JOB_FUNCTION``/``_ARGS`` in a step's environment once ran ``touch``, and
    ``FLATCAR_JOB_WORKSPACE`` pointed the clean-up at another directory, which it deleted."""
    canary, victim = tmp_path / "canary", tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me\n")
    values = {name: value.format(canary=canary, victim=victim) for name, value in env.items()}
    job = _job(probe_origin, canary, cache={})
    getattr(job, where).update(values)

    with pytest.raises(ValueError, match=r"in the step wrapper's namespace \(FLATCAR_JOB_\*\)"):
        _run(tmp_path / "root", job)

    assert not canary.exists()
    assert (victim / "precious").read_text() == "keep me\n"


def test_the_wrappers_own_values_come_last_in_job_env(tmp_path, probe_origin):
    """Even the one variable of the namespace the operator sets cannot be followed by a step's value."""
    job = _job(probe_origin, tmp_path / "c", cache={}, FLATCAR_JOB_PIN_ORIGIN_BRANCH="flatcar-4593")
    lines = render_job_env(job, mirror="m", workspace="w").splitlines()
    exports = [i for i, line in enumerate(lines) if line.startswith("export ")]
    own = [i for i, line in enumerate(lines) if line.startswith("FLATCAR_JOB_")]
    assert exports and own and max(exports) < min(own)
    job.secret_env["FLATCAR_JOB_PIN_ORIGIN_BRANCH"] = "main"  # a secrets connection may not set it
    with pytest.raises(ValueError, match="namespace"):
        render_job_env(job, mirror="m", workspace="w")
    job.secret_env.clear()
    job.env["FLATCAR_JOB_PIN_ORIGIN_BRANCH"] = "main\n--upload-pack=x"
    with pytest.raises(ValueError, match="is not a branch name"):
        render_job_env(job, mirror="m", workspace="w")


def test_configuration_refuses_step_env_in_the_wrappers_namespace():
    from flatcar_airflow.config import ConfigError, parse_config

    with pytest.raises(
        ConfigError, match=r"step_env: 'FLATCAR_JOB_FUNCTION' is in the step wrapper's namespace"
    ):
        parse_config(
            "scripts_repo: https://example.org/scripts.git\nstep_env: {FLATCAR_JOB_FUNCTION: touch}\n"
        )


def test_a_key_file_with_a_cache_port_other_than_22_gets_a_working_ssh_config(tmp_path, probe_origin):
    """With ``key_file`` (no ``private_key``), the job's ``ssh/`` directory was never made: every ssh of the
    step failed with "ssh/config: No such file or directory"."""
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    cache = {
        "server": "127.0.0.1",
        "port": "2222",
        "user": "bincache",
        "path_prefix": "/srv",
        "key_file": str(key),
    }

    rc, lines = _run(tmp_path / "root", _job(probe_origin, tmp_path / "canary", cache=cache))

    assert rc == 0, "\n".join(lines)
    assert "port 2222" in lines and "user bincache" in lines
    assert "ssh-G-failed" not in lines and not any("No such file" in line for line in lines)
    assert "probe done" in lines


@pytest.mark.parametrize(
    ("guard", "value"),
    [
        (check_ref_name, "main\n"),
        (check_ref_name, "flatcar-4593\n"),
        (parse_any, "main-4799.0.0\n"),
        (parse_any, "4799.0.0\n"),
        (parse_any, "main-4799.0.0-nightly-20260821-2100\n"),
        (index_path, "main\n"),
    ],
)
def test_a_final_newline_does_not_pass_a_pattern(guard, value):
    """A ``$`` matches before a final newline: ``"main\\n"`` passed ``check_ref_name`` and failed in git."""
    with pytest.raises(ValueError):
        guard(value)


def test_a_final_newline_does_not_pass_the_configuration():
    from flatcar_airflow.config import ConfigError, parse_config

    for text in ('queue: "default\\n"\n', 'os: {branches: ["flatcar-4593\\n"]}\n'):
        with pytest.raises(ConfigError):
            parse_config("scripts_repo: https://example.org/scripts.git\n" + text)


@pytest.mark.parametrize(
    "url",
    [
        "https://ci:ghp_0123456789abcdefTOKEN@github.com/x/scripts.git",
        "https://ghp_0123456789abcdefTOKEN@h/x.git",
    ],
)
def test_a_token_in_a_scripts_repo_url_is_masked(url):
    """For the step operator to call before its template fields are rendered (the rendered
    ``scripts_repo`` showed the token)."""
    from airflow.sdk.log import redact

    from flatcar_airflow.scripts_repo import mask_url_credentials

    mask_url_credentials(url)
    assert "ghp_0123456789abcdefTOKEN" not in str(redact(f"origin {url}"))
