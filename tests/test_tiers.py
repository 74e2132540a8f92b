"""The quick tier stays quick: a test outside the ``server``, ``subprocess`` and ``slow`` marks that starts a
process or listens on a socket fails, naming the mark it needs; a test requesting a fixture that starts one is
marked by the fixture (tests/support/tiers.py). Checked on planted modules run in-process."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.tiers import FIXTURE_MARKS, QUICK

TESTS = Path(__file__).parent

PLANTED = '''
import multiprocessing
import socket
import subprocess
import sys
import threading

import pytest


def test_runs_a_process():
    subprocess.run([sys.executable, "-c", "pass"])


def test_starts_a_child_process():
    multiprocessing.get_context("spawn").Process(target=print).start()


def test_listens_on_a_port():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()


def test_swallows_the_refusal():
    try:
        subprocess.run(["true"])
    except BaseException:
        pass


def test_runs_a_process_from_a_thread():
    thread = threading.Thread(target=subprocess.run, args=(["true"],))
    thread.start()
    thread.join()


def test_connects_without_listening():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))


@pytest.mark.subprocess
def test_marked():
    pass
'''

CONFTEST = '''
import pytest


@pytest.fixture
def daemon():
    return None


@pytest.fixture
def tiny_checkpoint():
    return None


@pytest.fixture
def exported(tiny_checkpoint):
    return None
'''


@pytest.fixture
def planted(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """The planted modules, run without installed plugins (a plugin may start processes as a session begins)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_planted=PLANTED)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_uses_a_daemon="def test_drives(daemon):\n    pass\n",
                        test_uses_a_bundle="def test_runs(exported):\n    pass\n")
    return pytester


def test_an_unmarked_test_that_starts_a_process_or_a_server_fails(planted: pytest.Pytester) -> None:
    result = planted.runpytest_inprocess("-p", "tests.support.tiers",
                                         "-W", "ignore::pytest.PytestUnhandledThreadExceptionWarning")
    result.assert_outcomes(failed=5, passed=4)
    out = result.stdout.str()
    for name, what, mark in [("test_runs_a_process", "starts a process", "subprocess"),
                             ("test_starts_a_child_process", "starts a process", "subprocess"),
                             ("test_listens_on_a_port", "listens on a socket", "server"),
                             ("test_swallows_the_refusal", "starts a process", "subprocess"),
                             ("test_runs_a_process_from_a_thread", "starts a process", "subprocess")]:
        assert re.search(rf"test_planted\.py::{name} {what} but is not marked `{mark}`", out), name


def test_a_fixture_that_starts_a_process_marks_the_test(planted: pytest.Pytester) -> None:
    result = planted.runpytest_inprocess("-p", "tests.support.tiers", "-m", QUICK, "test_uses_a_daemon.py")
    result.assert_outcomes(deselected=1)


def test_a_fixture_built_on_a_model_fixture_marks_the_test(planted: pytest.Pytester) -> None:
    result = planted.runpytest_inprocess("-p", "tests.support.tiers", "-m", "model", "test_uses_a_bundle.py")
    result.assert_outcomes(passed=1)
    result = planted.runpytest_inprocess("-p", "tests.support.tiers", "-m", QUICK, "test_uses_a_bundle.py")
    result.assert_outcomes(deselected=1)


def test_make_quick_selects_the_quick_tier() -> None:
    makefile = (TESTS.parent / "Makefile").read_text()
    assert re.search(rf"^quick:.*\n\t.*pytest .*-m \"{QUICK}\"", makefile, re.MULTILINE), QUICK


def test_each_marking_fixture_is_a_fixture_of_the_suite() -> None:
    """A renamed fixture would stop marking its tests: each name in FIXTURE_MARKS is still a fixture."""
    fixture = re.compile(r"^@pytest\.fixture.*\n(?:async )?def (\w+)\(", re.MULTILINE)
    defined = {name for module in TESTS.rglob("*.py") if module != Path(__file__)  # not the planted ones
               for name in fixture.findall(module.read_text())}
    assert set(FIXTURE_MARKS) <= defined, set(FIXTURE_MARKS) - defined
