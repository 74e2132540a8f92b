"""history.jsonl: one reader that tolerates a torn tail; a writer that starts a fresh line."""

from __future__ import annotations

import json
import os

from xvla_edge.deploy.history import History, read_history
from xvla_edge.deploy.rollback import rollback


def test_a_torn_history_line_is_skipped_and_the_next_entry_starts_a_line_of_its_own(robot_ab):
    torn = b'{"time": "2026-01-01T00:00:00+00:00", "action": "fla\xff'  # a write cut short, not even UTF-8
    with open(robot_ab / "history.jsonl", "ab") as f:
        f.write(torn)
    said: list[str] = []
    rollback(robot_ab, say=said.append)
    raw = (robot_ab / "history.jsonl").read_bytes().split(b"\n")
    assert raw[2] == torn and raw[-1] == b"" and len(raw) == 5  # the torn line kept as it was, on its own
    assert json.loads(raw[3])["action"] == "rollback"
    assert any("history.jsonl: its last line was torn" in m for m in said)
    history = read_history(robot_ab)
    assert [e["action"] for e in history.entries] == ["flash", "flash", "rollback"]
    assert len(history.warnings) == 1 and "history.jsonl: line 3 was skipped" in history.warnings[0]
    assert "UnicodeDecodeError" in history.warnings[0]


def test_read_history_skips_every_kind_of_bad_line_and_never_raises(tmp_path):
    good = [{"action": "flash", "n": i} for i in range(3)]
    bad = [b'{"build_s": NaN}', b'{"build_s": 1e400}', b"[1, 2]", b"[" * 100_000, b"\xff\xfe", b'{"a": 1']
    lines = [json.dumps(good[0]).encode(), *bad[:3], b"", json.dumps(good[1]).encode(), *bad[3:5],
             json.dumps(good[2]).encode(), bad[5]]
    (tmp_path / "history.jsonl").write_bytes(b"\n".join(lines))
    history = read_history(tmp_path)
    assert history.entries == good
    assert [w.split(": ", 1)[1].split(" was skipped")[0] for w in history.warnings] == [
        "line 2", "line 3", "line 4", "line 7", "line 8", "its last line (no newline at its end: a torn write)"]
    # only the file's tail is read: the line the window starts in is cut, not reported
    window = read_history(tmp_path, max_bytes=len(json.dumps(good[2])) + len(bad[5]) + 3)  # 1 byte of line 8
    assert window.entries == [good[2]] and len(window.warnings) == 1
    assert read_history(tmp_path / "nowhere") == History([], [])
    for kind in ("directory", "link", "fifo"):
        robot = tmp_path / kind
        robot.mkdir()
        if kind == "directory":
            (robot / "history.jsonl").mkdir()
        elif kind == "link":
            (robot / "history.jsonl").symlink_to(tmp_path / "history.jsonl")
        else:
            os.mkfifo(robot / "history.jsonl")  # opening it for reading must not block
        history = read_history(robot)
        assert history.entries == [] and f"{robot / 'history.jsonl'}: not read" in history.warnings[0]
