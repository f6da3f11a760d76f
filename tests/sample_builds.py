"""Builds as the pipelines record them, written straight into a build cache's files (for the builds page).

``sample_manifest`` makes the manifest a summary task writes (docs/pipelines.md) for one build;
``write_builds`` puts manifests, a few artifact files with their ``.DIGESTS`` and the branch indexes into
the cache's data directory, exactly where and how the pipelines put them. Tests that need real runs use the
pipelines; this is for what real runs cannot give in seconds: many builds, several branches, chosen failures.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

from flatcar_airflow.build_plan import MANIFEST_NAME
from flatcar_airflow.buildindex.entries import entry_from_manifest, index_path, render_index

ARCH_STEPS = ("packages", "push_packages", "image", "vms", "test_qemu_uefi", "image_changes")


def sample_manifest(
    branch: str,
    number: int,
    *,
    channel: str = "main",
    base: str = "4901.0.0",
    run_type: str = "scheduled",
    failed: tuple[str, str] | None = None,
    slow: float = 1.0,
    when: dt.datetime | None = None,
    arches: tuple[str, ...] = ("amd64", "arm64"),
    failing_tests: tuple[str, ...] = (),
    flaky_tests: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One build of ``branch`` (the ``number``-th, a day apart); ``failed=(arch, step)`` fails that step
    (later steps of the arch become upstream_failed); ``slow`` scales the step durations."""
    when = when or dt.datetime(2026, 11, 1, 21, tzinfo=dt.UTC) + dt.timedelta(days=number)
    stamp = when.strftime("%Y%m%d-%H%M")
    version = f"{base}+nightly-{stamp}"
    tag = f"{channel}-{base}-nightly-{stamp}"
    commit = hashlib.sha1(tag.encode()).hexdigest()  # noqa: S324 - a made-up commit id
    started = when + dt.timedelta(minutes=1)
    records: dict[str, dict[str, Any]] = {}
    state = "success"
    for arch in arches:
        broken = False
        records[arch] = {}
        for position, step in enumerate(ARCH_STEPS):
            seconds = (60 + 30 * position) * slow
            if broken:
                step_state = "upstream_failed"
            elif failed == (arch, step):
                step_state, broken, state = "failed", True, "failed"
            else:
                step_state = "success"
            artifacts = []
            if step == "image_changes" and step_state == "success":
                path = f"images/{arch}/{version}/flatcar-airflow-image-changes.txt"
                artifacts.append({"kind": "report", "path": path, "version": version, "arch": arch})
            if step == "image" and step_state == "success":
                for name in ("flatcar_production_image.bin.bz2", "version.txt"):
                    path = f"images/{arch}/{version}/{name}"
                    artifacts.append({"kind": "image-file", "path": path, "version": version, "arch": arch,
                                      "size": len(_content(path))})  # fmt: skip
            records[arch][step] = {
                **(
                    {"failure": {"kind": "disk-full", "summary": "disk full on the build host"}}
                    if step_state == "failed"
                    else {}
                ),
                "state": step_state,
                "duration_s": None if step_state == "upstream_failed" else seconds,
                "started_at": started.isoformat(),
                "finished_at": (started + dt.timedelta(seconds=seconds)).isoformat(),
                "reused": False,
                "artifacts": artifacts,
            }
    tests = {
        arch: {
            "qemu_uefi": {
                "passed": 4 + len(flaky_tests),
                "failed": len(failing_tests),
                "skipped": 0,
                "flaky": len(flaky_tests),
                "failures": list(failing_tests),
                "flaky_tests": list(flaky_tests),
            }
        }
        for arch in arches
        if records[arch]["test_qemu_uefi"]["state"] == "success"
    }
    return {
        "version": tag,
        "versionfile": {"FLATCAR_VERSION": version, "FLATCAR_SDK_VERSION": version},
        "commit": commit,
        "ref": branch,
        "branch": branch,
        "kind": "os",
        "dag_id": "flatcar_os_" + "".join(ch if ch.isalnum() else "_" for ch in branch),
        "run_id": f"{run_type}__{when.isoformat()}",
        "run_type": run_type,
        "run_time": when.isoformat(),
        "started_at": started.isoformat(),
        "finished_at": (started + dt.timedelta(hours=2)).isoformat(),
        "tag": {"action": "created", "state": "success", "message": "tagged"},
        "steps": {"packages_tag": {"state": "success", "duration_s": 20.0 * slow, "artifacts": []}},
        "arches": records,
        "tests": tests,
        "state": state,
    }


def _content(path: str) -> bytes:
    return f"sample artifact {path}\n".encode()


def write_builds(root: Path, manifests: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Write the manifests (one copy per arch), their image artifacts with ``.DIGESTS``, and the index of
    every branch into the cache directory ``root``; returns the index entries by branch, newest first."""
    entries: dict[str, list[dict[str, Any]]] = {}
    for manifest in manifests:
        version = manifest["versionfile"]["FLATCAR_VERSION"]
        paths = []
        for arch, records in manifest["arches"].items():
            path = f"images/{arch}/{version}/{MANIFEST_NAME}"
            paths.append(path)
            _write(root / path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
            for record in records.values():
                for artifact in record["artifacts"]:
                    data = _content(artifact["path"])
                    if artifact["kind"] == "report":
                        _write(
                            root / artifact["path"], f"Image changes of {arch}: +app-misc/jq-1.7\n".encode()
                        )
                        continue
                    _write(root / artifact["path"], data)
                    name = Path(artifact["path"]).name
                    digests = (
                        f"# MD5 HASH\n{hashlib.md5(data).hexdigest()}  {name}\n"  # noqa: S324 - as the scripts write
                        f"# SHA512 HASH\n{hashlib.sha512(data).hexdigest()}  {name}\n"
                    )
                    _write(root / (artifact["path"] + ".DIGESTS"), digests.encode())
        entries.setdefault(manifest["branch"], []).append(entry_from_manifest(manifest, paths))
    now = dt.datetime.now(dt.UTC)
    for branch, found in entries.items():
        _write(root / index_path(branch), render_index(branch, found, now))
        entries[branch] = json.loads((root / index_path(branch)).read_text())["builds"]
    return entries


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    temporary.replace(path)
