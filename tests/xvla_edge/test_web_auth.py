"""One token rule (:mod:`xvla_edge.web.auth`) wherever a token enters: ``xvla-edge serve`` (``--token``,
``--token-file``, ``XVLA_SERVE_TOKEN``) and robot.toml's ``token_file`` keys; constant-time comparison; loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from xvla_edge.cli import main
from xvla_edge.daemon.config import ConfigError, load_config
from xvla_edge.web.auth import TokenError, check_token, is_loopback, read_token_file, same_token, token_required

GOOD = ["0123456789abcdef", "c0ffee-c0ffee-c0ffee", "Zx8_kQ2-vN5mP0aL7wR3tY6uI1oE4sD9", "!#$%&()*+,-./:;<=>?@[]^_{|}~"]
BAD = [  # token, what the refusal says
    (" " * 16, "character 1 is U+0020"),  # accepted by --token before: ?token=%20... authenticated
    ("\t" * 20, "character 1 is U+0009"),
    ("abcdefgh ijklmnop", "character 9 is U+0020"),
    ("abcdefghijklmno\x00", "character 16 is U+0000"),
    ("tökentökentökentöken", "character 2 is U+00F6, not a printable ASCII character"),
    ("\ud800" + "a1b2c3d4e5f6g7h8", "character 1 is U+D800"),
    ("a" * 16, "only 1 different character(s)"),
    ("ab" * 8, "only 2 different character(s)"),
    ("abcd" * 8, "only 4 different character(s)"),
    ("short", "5 characters; expected at least 16 characters"),
]


@pytest.mark.parametrize("token", GOOD)
def test_good_tokens_pass(token):
    assert check_token(token) == token


@pytest.mark.parametrize("token, message", BAD)
def test_bad_tokens_are_refused_saying_why(token, message):
    with pytest.raises(TokenError, match="expected at least 16 characters, printable ASCII without spaces") as err:
        check_token(token)
    assert message in str(err.value) and (len(set(token)) < 3 or token not in str(err.value))


def private(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("token, message", [t for t in BAD if "\ud800" not in t[0]])
def test_serve_applies_the_rule_to_every_token_source(token, message, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("XVLA_SERVE_TOKEN", raising=False)
    assert main(["serve", str(tmp_path), "--host", "0.0.0.0", "--token", token]) == 1
    assert f"--token: {message}" in capsys.readouterr().err
    file = private(tmp_path / "token", token + "\n")
    if token.strip():  # a file of whitespace is an empty file
        assert main(["serve", str(tmp_path), "--host", "0.0.0.0", "--token-file", str(file)]) == 1
        assert f"--token-file {file}: {message}" in capsys.readouterr().err
    if "\x00" not in token:  # the environment cannot hold one
        monkeypatch.setenv("XVLA_SERVE_TOKEN", token)
        assert main(["serve", str(tmp_path), "--host", "0.0.0.0"]) == 1
        assert f"XVLA_SERVE_TOKEN: {message}" in capsys.readouterr().err


@pytest.mark.parametrize("section", ["health", "policy"])
@pytest.mark.parametrize("token, message", [(" " * 16, "the file is empty"), ("a" * 16, "only 1 different"),
                                            ("tökentökentökentöken", "U+00F6"), ("short", "5 characters")])
def test_robot_toml_token_files_follow_the_same_rule(section, token, message, tmp_path):
    file = private(tmp_path / "token", token + "\n")
    where = 'host = "0.0.0.0"' if section == "health" else 'url = "ws://gpu-box:8000"'
    bundle = '[bundle]\npath = "bundle"\n' if section == "health" else ""
    text = (f'instruction = "wave"\n{bundle}[[cameras]]\nslot = 0\nsource = "synthetic"\n[arm]\ndriver = "sim"\n'
            f'[{section}]\n{where}\ntoken_file = "{file}"\n')
    (tmp_path / "robot.toml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "robot.toml")
    line = next(line for line in str(err.value).splitlines() if f"[{section}].token_file" in line)
    assert message in line and "expected" in line


def test_token_files_are_private_and_read_whole(tmp_path):
    file = private(tmp_path / "token", "  0123456789abcdef \n\n")
    assert read_token_file(file) == "0123456789abcdef"
    file.chmod(0o640)
    with pytest.raises(TokenError, match=r"readable by others; .*\(chmod 600 "):
        read_token_file(file)
    with pytest.raises(TokenError, match="character 17 is U\\+000A"):  # a second line is not ignored
        read_token_file(private(tmp_path / "two", "0123456789abcdef\nsecond-line-here\n"))
    with pytest.raises(TokenError, match="cannot read it as text"):
        read_token_file(tmp_path / "missing")


def test_same_token_and_loopback():
    assert same_token("0123456789abcdef", "0123456789abcdef")
    assert not same_token("0123456789abcdeF", "0123456789abcdef") and not same_token("", "0123456789abcdef")
    assert not same_token("\ud800" * 16, "0123456789abcdef")  # a query parameter may carry a lone surrogate
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "gpu-box", ""]))


def test_a_token_is_required_beyond_loopback_unless_lab_mode_is_chosen():
    assert token_required("0.0.0.0") and token_required("10.0.0.1") and token_required("gpu-box")
    assert not token_required("127.0.0.1") and not token_required("::1")
    assert not token_required("10.0.0.1", allow_unauthenticated=True)  # xvla-edge serve --allow-unauthenticated
