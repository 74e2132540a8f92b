"""The connection-info file (:mod:`xvla_edge.serve.connection_info`): the official server's fields and types,
hosts a client can reach, refusal of an existing file, removal of its own file only, never read half-written."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from xvla_edge.serve.connection_info import check_free, client_host, write
from xvla_edge.serve.server import ServeError


def test_the_fields_are_the_official_servers(tmp_path):
    """deploy.py (X-VLA 6bc2513): {"host", "port": int, "job_id": SLURM_JOB_ID or "none", "node_list":
    SLURM_NODELIST or "none"}, written by json.dump(..., indent=4)."""
    info = write(tmp_path / "info.json", "127.0.0.1", 8123, env={})
    expected = {"host": "127.0.0.1", "port": 8123, "job_id": "none", "node_list": "none"}
    assert (tmp_path / "info.json").read_text() == json.dumps(expected, indent=4) and info.fields == expected
    slurm = write(tmp_path / "slurm.json", "127.0.0.1", 8124, env={"SLURM_JOB_ID": "4711", "SLURM_NODELIST": "gpu-[1-2]"})
    assert json.loads((tmp_path / "slurm.json").read_text()) == {"host": "127.0.0.1", "port": 8124, "job_id": "4711",
                                                                 "node_list": "gpu-[1-2]"} == slurm.fields
    assert (tmp_path / "info.json").stat().st_mode & 0o777 == 0o644  # clients of other users can read it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["info.json", "slurm.json"]  # no temporary file left


@pytest.mark.server
def test_a_wildcard_host_becomes_an_address_a_client_connects_to():
    with socket.create_server(("0.0.0.0", 0)) as server:
        host = client_host("0.0.0.0")
        assert host != "0.0.0.0"
        with socket.create_connection((host, server.getsockname()[1]), timeout=5):
            pass
    assert client_host("127.0.0.1") == "127.0.0.1" and client_host("10.1.2.3") == "10.1.2.3"


@pytest.mark.server
def test_ipv6_hosts_are_bracketed_so_the_clients_url_is_valid():
    assert client_host("::1") == "[::1]"
    url = f"http://{client_host('::1')}:8010/act"  # as the official clients build it
    assert urlsplit(url).hostname == "::1" and urlsplit(url).port == 8010
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine: the wildcard :: is not checked")
    try:
        server = socket.create_server(("::", 0), family=socket.AF_INET6)
    except OSError as exc:
        pytest.skip(f"cannot listen on [::] here ({exc}): the wildcard :: is not checked")
    with server:
        host = client_host("::")
        assert host.startswith("[") and host != "[::]"
        with socket.create_connection((host[1:-1], server.getsockname()[1]), timeout=5):
            pass


def test_an_existing_file_is_refused_by_name_and_only_the_servers_own_file_is_removed(tmp_path):
    path = tmp_path / "logs" / "info.json"
    check_free(path)  # creates the directory, as deploy.py makes its output directory
    assert path.parent.is_dir() and not path.exists()
    info = write(path, "127.0.0.1", 8000, env={})
    with pytest.raises(ServeError, match=f"--connection-info {path} already exists: another server is still running"):
        check_free(path)
    with pytest.raises(ServeError, match="already exists"):  # between a check and the write: never overwritten
        write(path, "127.0.0.1", 9000, env={})
    assert json.loads(path.read_text())["port"] == 8000
    path.unlink()
    path.write_text('{"host": "other", "port": 1}')  # another server's file since: left alone
    info.remove()
    assert json.loads(path.read_text())["host"] == "other"
    path.unlink()
    mine = write(path, "127.0.0.1", 8000, env={})
    mine.remove()
    assert not path.exists()
    mine.remove()  # already gone: nothing to do
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ServeError, match="already exists"):
        check_free(dangling)


# A reader as the official clients read: poll until the path exists, then read it once.
READER = textwrap.dedent("""
    import json, os, sys
    folder, count = sys.argv[1], int(sys.argv[2])
    torn = 0
    for i in range(count):
        path = os.path.join(folder, f"info{i}.json")
        while not os.path.exists(path):
            pass
        try:
            json.loads(open(path).read())
        except ValueError:
            torn += 1
        open(os.path.join(folder, f"ack{i}"), "w").close()
    print(torn)
""")


@pytest.mark.subprocess
def test_a_polling_client_never_reads_a_half_written_file(tmp_path):
    """The official clients read the file as soon as it exists; written in place, a reader polling in another
    process saw it empty or cut (measured: 51 and 82 of 100 files written with open + json.dump, as deploy.py
    writes it); written here, never."""
    count = 100
    reader = subprocess.Popen([sys.executable, "-c", READER, str(tmp_path), str(count)], stdout=subprocess.PIPE,
                              text=True)
    for i in range(count):
        write(tmp_path / f"info{i}.json", "127.0.0.1", 8000 + i, env={"SLURM_NODELIST": "n" * 4000})
        ack = tmp_path / f"ack{i}"
        while not ack.exists():
            assert reader.poll() is None, "the reader stopped"
    out, _ = reader.communicate(timeout=30)
    assert reader.returncode == 0 and int(out) == 0


def test_a_directory_that_cannot_be_made_is_named(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ServeError, match=f"--connection-info {tmp_path / 'file' / 'info.json'}: cannot create its "
                                         "directory"):
        check_free(tmp_path / "file" / "info.json")
