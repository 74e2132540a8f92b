"""The robot's side of a fleet flash, in process (no ssh): what it writes stays inside its directory, its status
answers whatever the directory holds, and an answer after the switch reports the switch."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import pytest

from runtime.manifest import Manifest
from xvla_edge.deploy import settle
from xvla_edge.deploy.fleet.agent import AgentError, main, run
from xvla_edge.deploy.install import flash


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def send(root: Path, bundle: Path) -> str:
    """Every file of ``bundle`` put into the agent at ``root``, the bundle assembled there; its bundle id."""
    for path in sorted(bundle.iterdir()):
        data = path.read_bytes()
        run(root, "put", [sha(data), str(len(data)), "0"], io.BytesIO(data))
    run(root, "assemble", [sha((bundle / "manifest.json").read_bytes())], io.BytesIO())
    return Manifest.load(bundle).bundle_id


def answer(capsys, rc: int, expected_rc: int) -> dict:
    out = capsys.readouterr().out
    assert rc == expected_rc, out
    return json.loads(out.splitlines()[-1])


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("link", [".objects", ".objects/SHA.partial", ".objects/SHA", ".incoming"])
def test_a_link_placed_where_the_agent_writes_is_refused_by_name_and_nothing_lands_outside(tiny_bundle, tmp_path,
                                                                                           link):
    root, outside = tmp_path / "robot", tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(b"precious")
    data = (tiny_bundle / "tokenizer.json").read_bytes()
    path = root / link.replace("SHA", sha(data))
    if link == ".incoming":
        for file in sorted(tiny_bundle.iterdir()):  # every object is here: assemble would write the bundle
            content = file.read_bytes()
            run(root, "put", [sha(content), str(len(content)), "0"], io.BytesIO(content))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(outside if link in (".objects", ".incoming") else outside / "precious")
    before, offset = tree(outside), 8 if link.endswith(".partial") else 0  # where the link's target ends
    try:
        if link == ".incoming":
            run(root, "assemble", [sha((tiny_bundle / "manifest.json").read_bytes())], io.BytesIO())
        else:
            run(root, "put", [sha(data), str(len(data) + offset), str(offset)], io.BytesIO(data))
        refusal = "none"
    except AgentError as exc:
        refusal = str(exc)
    assert tree(outside) == before
    assert re.fullmatch(rf"{re.escape(str(path))}: expected .* found a link .*; move it away", refusal), refusal


def test_status_and_probe_answer_despite_a_torn_history(tiny_bundle, tmp_path, capsys):
    root = tmp_path / "robot"
    flash(tiny_bundle, root, say=lambda line: None)
    with open(root / "history.jsonl", "ab") as f:
        f.write(b'{"time": "2026-01-01T00:00:00+00:00", "act\xc3')  # torn mid-character
    status = answer(capsys, main(root, "status", []), 0)
    assert status["current"]["bundle_id"] == Manifest.load(tiny_bundle).bundle_id
    assert status["last"]["action"] == "flash" and status["last"]["bundle_id"] == status["current"]["bundle_id"]
    assert len(status["warnings"]) == 1 and "history.jsonl: its last line (no newline" in status["warnings"][0]
    probe = answer(capsys, main(root, "probe", ["http://127.0.0.1:1/healthz"]), 0)
    assert probe["health"] is None and probe["last"] == status["last"] and probe["warnings"] == status["warnings"]


def test_a_failure_after_the_switch_is_answered_as_the_switch(tiny_bundle, tmp_path, capsys, monkeypatch):
    root = tmp_path / "robot"
    bundle_id = send(root, tiny_bundle)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(settle, "record", disk_full)
    flashed = answer(capsys, main(root, "flash", [bundle_id]), 0)
    assert flashed["current"]["bundle_id"] == bundle_id == Manifest.load(root / "current").bundle_id
    assert any("No space left on device" in m for m in flashed["messages"])
    assert flashed["last"] is None  # no history line was written, and none is made up
