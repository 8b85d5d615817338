"""`POST /tools/reset` and `/tools/shutdown` through REST, in both modes, each test on a
server of its own (the process really stops or restarts).

As Orthanc 1.12 (`OrthancRestApi::ResetOrthanc`, `ShutdownOrthanc`), both answer `{}`
to any authenticated user: no setting gates them. A reset reads the configuration
again and restarts the process's services; a shutdown stops them and the process
exits 0. In distributed mode this applies to the one gateway replica that answered;
its supervisor (Compose, Kubernetes, here `restart_member`) starts it again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from dicomfiles import SAMPLES, sample_path
from servers import Server, allinone_server, cluster_server, restart_member, wait_until


def _system_name(url: str, timeout: float = 5) -> str:
    try:
        answer = httpx.get(f"{url}/system", timeout=timeout)
    except httpx.HTTPError as error:
        return repr(error)
    return str(answer.json()["Name"]) if answer.status_code == 200 else f"HTTP {answer.status_code}"


def _rename(server: Server, name: str) -> None:
    """Change `Name` in the configuration file the server was started with."""
    folder = server.state_dir.parent if server.state_dir is not None else server.storage_dir
    assert folder is not None
    path = (folder if server.state_dir is not None else folder.parent) / "dicomkeep.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["Name"] = name
    path.write_text(json.dumps(config), encoding="utf-8")


def _store_one(client: httpx.Client) -> str:
    answer = client.post("/instances", content=sample_path(SAMPLES[0]).read_bytes())
    assert answer.status_code == 200, answer.text
    return str(answer.json()["ID"])


def test_allinone_reset_reads_the_configuration_again(tmp_path: Path) -> None:
    with allinone_server(tmp_path) as server, server.client() as client:
        process = server.processes[0]
        instance = _store_one(client)
        assert client.get("/system").json()["Name"] == "MyOrthanc"
        _rename(server, "AfterReset")
        answer = client.post("/tools/reset")
        assert answer.status_code == 200
        assert answer.json() == {}
        wait_until(lambda: _system_name(server.url) == "AfterReset", timeout=60,
                   what="the server to restart with the new Name")
        assert process.poll() is None  # the same process, its services restarted
        with server.client() as again:
            assert again.get(f"/instances/{instance}").status_code == 200
            assert again.get("/tools/reset").status_code == 405
            # A configuration that no longer loads: the reset stops the process, status 2.
            (tmp_path / "dicomkeep.json").write_text('{"HttpPort": "not a port"}', "utf-8")
            assert again.post("/tools/reset").json() == {}
        assert process.wait(30) == 2
        assert "bad configuration" in (tmp_path / "server.log").read_text("utf-8")


def test_allinone_shutdown_stops_the_process(tmp_path: Path) -> None:
    with allinone_server(tmp_path) as server, server.client() as client:
        process = server.processes[0]
        answer = client.post("/tools/shutdown")
        assert answer.status_code == 200
        assert answer.json() == {}
        assert process.wait(30) == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/system", timeout=2)


def test_distributed_reset_and_shutdown_of_one_gateway(tmp_path: Path) -> None:
    with cluster_server(tmp_path) as server:
        from dicomkeep.allinone import cluster

        assert server.state_dir is not None
        first, second = server.urls
        with httpx.Client(base_url=first, timeout=30) as client:
            instance = _store_one(client)
            _rename(server, "AfterReset")
            answer = client.post("/tools/reset")
            assert answer.status_code == 200 and answer.json() == {}
        wait_until(lambda: _system_name(first) == "AfterReset", timeout=60,
                   what="gateway-1 to restart with the new Name")
        # Only the replica that was asked re-read its configuration.
        assert _system_name(second, timeout=30) == "MyOrthanc"

        state = cluster.load_state(server.state_dir)
        assert state is not None
        pid = next(m.pid for m in state.members if m.name == "gateway-2")
        with httpx.Client(base_url=second, timeout=30) as client:
            answer = client.post("/tools/shutdown")
            assert answer.status_code == 200 and answer.json() == {}
        deadline = time.monotonic() + 30
        while cluster._alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not cluster._alive(pid), "gateway-2 did not exit"
        with httpx.Client(base_url=first, timeout=30) as client:  # the other replica serves
            assert client.get(f"/instances/{instance}").status_code == 200
        restart_member(server, "gateway-2")  # what the supervisor does
        assert _system_name(second, timeout=30) == "AfterReset"
