"""``xvla-edge serve`` refuses to expose itself without a token, and bad options, before loading anything."""

from __future__ import annotations

import pytest

from xvla_edge.cli import main
from xvla_edge.serve.server import ServeError, check_exposure


@pytest.mark.parametrize("argv, message", [
    (["--host", "0.0.0.0"], "--host 0.0.0.0 is reachable from other machines: give --token-file"),
    (["--host", "192.168.1.20"], "--host 192.168.1.20 is reachable from other machines"),
    (["--token", "short"], "--token: 5 characters; expected at least 16 characters"),
    (["--host", "0.0.0.0", "--token", " " * 16], "--token: character 1 is U+0020, not a printable ASCII character"),
    (["--token", "a" * 16, "--token-file", "/nonexistent"], "give one of --token and --token-file"),
    (["--token-file", "/nonexistent/token"], "--token-file /nonexistent/token: cannot read it"),
    (["--image-dir", "/nonexistent/frames"], "--image-dir /nonexistent/frames: not a directory"),
    (["--host", "0.0.0.0", "--allow-unauthenticated", "--token", "0123456789abcdef"],
     "--allow-unauthenticated serves without a token: give it or a token, not both"),
    (["--allow-unauthenticated"], "--allow-unauthenticated: --host 127.0.0.1 is a loopback address"),
    (["--ws-domain", "3"], "--ws-domain names the domain of --ws-layout's messages: give --ws-layout too"),
    (["--ws-layout", "openpi-nope"], "--ws-layout openpi-nope: neither a preset (openpi-libero, openpi-droid, "
                                     "openpi-aloha) nor a file"),
    (["--ray", "--ws-layout", "openpi-libero"], "--ws-layout is not supported with --ray yet"),
    (["--ray", "--connection-info", "/tmp/info.json"], "--connection-info is not supported with --ray yet"),
    (["--ray", "--port", "0"], "--port 0 is not supported with --ray yet"),
])
def test_refusals_name_the_option(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("XVLA_SERVE_TOKEN", raising=False)
    assert main(["serve", str(tmp_path), *argv]) == 1
    assert message in capsys.readouterr().err


def test_token_files_must_be_private_and_hold_a_token(tmp_path, capsys):
    token = tmp_path / "token"
    token.write_text("\n")
    token.chmod(0o644)
    assert main(["serve", str(tmp_path), "--token-file", str(token)]) == 1
    assert f"readable by others; expected a file only its owner can read (chmod 600 {token})" in capsys.readouterr().err
    token.chmod(0o600)
    assert main(["serve", str(tmp_path), "--token-file", str(token)]) == 1
    assert "the file is empty" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--port", "-1"], ["--port", "70000"], ["--max-body-mb", "nan"],
                                  ["--max-body-mb", "-1"], ["--max-image-pixels", "0"]])
def test_bad_numbers_are_usage_errors(argv, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", str(tmp_path), *argv])
    assert exit_.value.code == 2


def test_exposure_needs_a_token_that_follows_the_rule():
    check_exposure("0.0.0.0", "0123456789abcdef")  # exposed with a token: allowed
    check_exposure("127.0.0.1", None)
    check_exposure("192.168.1.20", None, allow_unauthenticated=True)  # lab mode: the operator's explicit opt-in
    for token in ("x" * 16, " " * 16):  # what --token took before (issue 33)
        with pytest.raises(ServeError, match="token: .*expected at least 16 characters, printable ASCII"):
            check_exposure("0.0.0.0", token)


def test_an_existing_connection_info_file_is_refused_before_anything_loads(tmp_path, capsys):
    info = tmp_path / "info.json"
    info.write_text("{}")
    assert main(["serve", str(tmp_path / "no-bundle"), "--connection-info", str(info)]) == 1
    assert f"--connection-info {info} already exists: another server is still running" in capsys.readouterr().err
