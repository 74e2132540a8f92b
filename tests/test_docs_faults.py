"""The fault table of docs/faults.md stays true: at least 20 rows, and every test a row names exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def fault_rows() -> list[str]:
    text = (REPO / "docs" / "faults.md").read_text()
    return [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| fault")]


def test_every_row_names_tests_that_exist():
    rows = fault_rows()
    assert len(rows) >= 20
    for row in rows:
        refs = re.findall(r"`((?:[\w/]+/)?(test_\w+\.py))?::(test_\w+)`", row)
        assert refs, f"no test named in: {row}"
        current = None
        for path, basename, name in refs:
            if basename:
                found = [REPO / path] if "/" in path else list((REPO / "tests").rglob(basename))
                assert len(found) == 1 and found[0].is_file(), f"{path or basename}: not one test file ({row})"
                current = found[0]
            assert current is not None and re.search(rf"^def {name}\(", current.read_text(), re.M), \
                f"{name} is not a test of {current} ({row})"
