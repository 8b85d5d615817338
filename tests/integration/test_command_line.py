"""The `dicomkeep` command line against running servers, as a user types it.

All-in-one: `upload` of a folder (ImportDicomFiles.py's job) with and without
credentials, `job wait` on a store job, options after the configuration path
(`--logfile`). Distributed: `dicomkeep cluster start` with authentication on
becomes ready, keeps every stored file across `cluster stop` and `cluster start`.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from backends import REDIS_URL, pg_dsn
from dicom_peers import storage_scp
from servers import (
    DICOMKEEP,
    Server,
    _http_port_pair,
    _pg,
    free_port,
    rabbit_vhost,
    stop_processes,
    wait_http,
    write_config,
)
from synthetic import generate_study, write_files

USERS = {"alice": "wonder-land-7"}


def dicomkeep(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the `dicomkeep` command with the environment minus DICOMKEEP_* overrides."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DICOMKEEP_")}
    return subprocess.run(
        [DICOMKEEP, *args], capture_output=True, text=True, timeout=timeout, env=environ
    )


def dicom_folder(tmp: Path, seed: int, instances: int = 3) -> tuple[Path, dict[str, bytes]]:
    """A folder of a synthetic study (two levels deep); its files' bytes by SOPInstanceUID."""
    study = generate_study(series=2, instances_per_series=instances, seed=seed)
    folder = tmp / f"upload-{seed}"
    paths = write_files(study, folder)
    return folder, {i.sop_uid: p.read_bytes() for i, p in zip(study, paths, strict=True)}


def stored_files(client: httpx.Client) -> dict[str, bytes]:
    """Every instance's `/file`, by SOPInstanceUID."""
    files = {}
    for instance in client.get("/instances").json():
        tags = client.get(f"/instances/{instance}/simplified-tags").json()
        answer = client.get(f"/instances/{instance}/file")
        assert answer.status_code == 200, (instance, answer.status_code)
        files[tags["SOPInstanceUID"]] = answer.content
    return files


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`dicomkeep serve` with HTTP authentication on (user alice)."""
    tmp = tmp_path_factory.mktemp("cli-allinone")
    http, dicom = free_port(), free_port()
    config = write_config(tmp, {
        "HttpPort": http, "DicomPort": dicom, "DicomAet": "DICOMKEEP",
        "StorageDirectory": str(tmp / "storage"), "AuthenticationEnabled": True,
        "RegisteredUsers": USERS, "ConcurrentJobs": 1,
    })
    with open(tmp / "server.log", "wb") as log:
        process = subprocess.Popen([DICOMKEEP, "serve", str(config)], stdout=log,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http}"
    try:
        deadline = time.monotonic() + 60
        while httpx_status(f"{url}/system") != 401:
            assert process.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        yield Server(urls=[url], dicom_port=dicom, aet="DICOMKEEP", storage_dir=tmp / "storage",
                     config={}, processes=[process])
    finally:
        stop_processes([process])


def httpx_status(url: str) -> int:
    try:
        return httpx.get(url, timeout=1).status_code
    except httpx.HTTPError:
        return 0


def test_upload_a_folder_counts_stored_already_stored_and_failed(
    server: Server, tmp_path: Path
) -> None:
    folder, sent = dicom_folder(tmp_path, seed=71)
    (folder / "README.txt").write_text("not a DICOM file")
    url = server.url
    first = dicomkeep("upload", str(folder), "--url", url, "--username", "alice",
                      "--password", USERS["alice"])
    assert first.returncode == 1, first.stderr  # one file is not DICOM
    assert first.stdout.strip() == "7 files: 6 stored, 0 already stored, 1 failed"
    assert "README.txt: HTTP 400" in first.stderr
    with httpx.Client(base_url=url, auth=("alice", USERS["alice"])) as client:
        assert stored_files(client) == sent
    # The password may come from the environment instead of the command line.
    again = subprocess.run(
        [DICOMKEEP, "upload", *map(str, sorted(folder.rglob("*.dcm"))), "--url", url,
         "--username", "alice"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "DICOMKEEP_PASSWORD": USERS["alice"]},
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "6 files: 0 stored, 6 already stored, 0 failed"


def test_upload_without_credentials_fails_every_file(server: Server, tmp_path: Path) -> None:
    folder, _ = dicom_folder(tmp_path, seed=72, instances=1)
    result = dicomkeep("upload", str(folder), "--url", server.url)
    assert result.returncode == 1
    assert result.stdout.strip() == "2 files: 0 stored, 0 already stored, 2 failed"
    assert result.stderr.count("HTTP 401") == 2
    missing = dicomkeep("upload", str(tmp_path / "nowhere"), "--url", server.url)
    assert missing.returncode == 2
    assert "no such file or folder" in missing.stderr


def test_job_wait_follows_a_job_to_its_end(server: Server, tmp_path: Path) -> None:
    folder, sent = dicom_folder(tmp_path, seed=73, instances=4)
    url = server.url
    login = ["--url", url, "--username", "alice", "--password", USERS["alice"]]
    assert dicomkeep("upload", str(folder), *login).returncode == 0
    with storage_scp(aet="SLOW", delay=0.1) as scp, httpx.Client(
        base_url=url, auth=("alice", USERS["alice"]), timeout=30
    ) as client:
        assert client.put("/modalities/slow", json=["SLOW", "127.0.0.1", scp.port]).is_success
        dead = {"AET": "DEAD", "Host": "127.0.0.1", "Port": free_port(), "Timeout": 2}
        assert client.put("/modalities/dead", json=dead).is_success
        (found,) = client.post("/tools/lookup", content=next(iter(sent)).encode()).json()
        study = client.get(f"/instances/{found['ID']}/study").json()["ID"]
        submit = {"Resources": [study], "Asynchronous": True}
        job_id = client.post("/modalities/slow/store", json=submit).json()["ID"]
        done = dicomkeep("job", "wait", job_id, *login)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"job {job_id} Success"
        job = client.get(f"/jobs/{job_id}").json()
        assert (job["State"], job["Progress"]) == ("Success", 100)
        assert sorted(scp.received) == sorted(sent)
        failing = client.post("/modalities/dead/store", json=submit).json()["ID"]
        failed = dicomkeep("job", "wait", failing, *login)
        assert failed.returncode == 1
        assert f"job {failing} failed" in failed.stderr and "DEAD" in failed.stderr
    unknown = dicomkeep("job", "wait", "no-such-job", *login)
    assert (unknown.returncode, unknown.stderr.strip()) == (1, "dicomkeep: unknown job no-such-job")


def test_options_after_the_configuration_path(tmp_path: Path) -> None:
    """`dicomkeep CONFIG --verbose --logfile=FILE` serves and logs to FILE (Orthanc's order)."""
    port, dicom = free_port(), free_port()
    config = write_config(tmp_path, {
        "HttpPort": port, "DicomPort": dicom, "StorageDirectory": str(tmp_path / "storage"),
    })
    log = tmp_path / "dicomkeep.log"
    process = subprocess.Popen(
        [DICOMKEEP, str(config), "--verbose", f"--logfile={log}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/system", time.monotonic() + 60, process)
        assert "all-in-one ready" in log.read_text()
        # A second server on the same ports: one line, status 1, no traceback.
        taken = dicomkeep(str(config))
        assert taken.returncode == 1
        assert taken.stderr == f"dicomkeep: port {port} (HttpPort) is already in use by another program\n"
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert b"ready" not in stderr  # the log went to the file


# -- distributed: `dicomkeep cluster start` as a user runs it ------------------------------


def test_cluster_with_authentication_keeps_every_file_across_stop_and_start(
    tmp_path: Path,
) -> None:
    name = f"dk_cli_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    redis_url = REDIS_URL.rsplit("/", 1)[0] + f"/{1 + os.getpid() % 15}"
    redis.Redis.from_url(redis_url).flushdb()
    state = tmp_path / "state"
    with rabbit_vhost(name) as amqp_url:
        http = _http_port_pair()
        config = write_config(tmp_path, {
            "HttpPort": http, "DicomPort": free_port(), "StableAge": 2,
            "AuthenticationEnabled": True, "RegisteredUsers": USERS,
            "PostgreSQL": {"ConnectionUri": pg_dsn(name)},
            "RabbitMQ": {"Url": amqp_url}, "Redis": {"Url": redis_url},
        })
        start = ["cluster", "start", str(config), "--state-dir", str(state)]
        try:
            started = dicomkeep(*start, timeout=400)
            assert started.returncode == 0, started.stderr
            assert f"blobs: files in {state / 'storage'}" in started.stdout
            assert "8/8" in started.stderr  # the progress bar: 8 members ready
            urls = [f"http://127.0.0.1:{http}", f"http://127.0.0.1:{http + 1}"]
            assert httpx.get(f"{urls[0]}/system").status_code == 401
            folder, sent = dicom_folder(tmp_path, seed=74)
            login = ["--username", "alice", "--password", USERS["alice"]]
            uploaded = dicomkeep("upload", str(folder), "--url", urls[1], *login)
            assert uploaded.returncode == 0, uploaded.stderr
            assert uploaded.stdout.strip() == "6 files: 6 stored, 0 already stored, 0 failed"
            stopped = dicomkeep("cluster", "stop", "--state-dir", str(state))
            assert stopped.returncode == 0 and stopped.stdout.startswith("stopped 8 processes")
            again = dicomkeep(*start, timeout=400)
            assert again.returncode == 0, again.stderr
            for url in urls:
                with httpx.Client(base_url=url, auth=("alice", USERS["alice"]),
                                  timeout=30) as client:
                    assert stored_files(client) == sent
        finally:
            dicomkeep("cluster", "stop", "--state-dir", str(state))
            _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
