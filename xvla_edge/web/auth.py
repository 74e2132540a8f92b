"""Bearer tokens of the HTTP endpoints: one rule for ``xvla-edge serve`` (``--token``, ``--token-file``,
``XVLA_SERVE_TOKEN``, the Ray app's ``token`` / ``token_file``) and robot.toml's ``token_file`` keys.

A token is at least :data:`MIN_TOKEN_CHARS` printable ASCII characters (``!`` ... ``~``: no spaces, no control
or non-ASCII characters, so it travels unchanged in a header and a URL) with at least
:data:`MIN_DISTINCT_CHARS` different ones (``aaaa...`` and ``abab...`` are refused; 16 hex digits of
``openssl rand -hex 8`` have fewer about once in 2.5 million). A token file is a file only its owner can
read, holding the token alone (surrounding whitespace, such as the final newline, is ignored). Tokens are
compared in constant time (:func:`same_token`).

Who must require one (:func:`token_required`): every server bound beyond loopback (:func:`is_loopback`), except
``xvla-edge serve`` started with ``--allow-unauthenticated`` (lab mode, for the official evaluation clients,
which cannot send a token, on a trusted network). The daemon never takes that opt-in: its endpoints start
recordings and command a real arm, and every client of it is this project's own, which can send a token.
"""

from __future__ import annotations

import hmac
import ipaddress
from pathlib import Path

from xvla.errors import XVLAError

MIN_TOKEN_CHARS = 16
MIN_DISTINCT_CHARS = 5
TOKEN_RULE = (f"at least {MIN_TOKEN_CHARS} characters, printable ASCII without spaces, at least {MIN_DISTINCT_CHARS} "
              "of them different (e.g. from `openssl rand -hex 32`)")


class TokenError(XVLAError, ValueError):
    """A token or token file that cannot be used; the message says why, without the token."""


def check_token(token: str) -> str:
    """``token`` if it follows the rule (see the module docstring), else :class:`TokenError`."""
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenError(f"{len(token)} characters; expected {TOKEN_RULE}")
    for i, c in enumerate(token):
        if not "!" <= c <= "~":
            raise TokenError(f"character {i + 1} is U+{ord(c):04X}, not a printable ASCII character; expected "
                             f"{TOKEN_RULE}")
    distinct = len(set(token))
    if distinct < MIN_DISTINCT_CHARS:
        raise TokenError(f"only {distinct} different character(s); expected {TOKEN_RULE}")
    return token


def read_token_file(path: Path) -> str:
    """The token in ``path``, checked: the file must be readable by its owner only."""
    try:
        if path.stat().st_mode & 0o077:
            raise TokenError(f"readable by others; expected a file only its owner can read (chmod 600 {path})")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"cannot read it as text ({exc})") from None
    token = text.strip()
    if not token:
        raise TokenError(f"the file is empty; expected {TOKEN_RULE}")
    return check_token(token)


def same_token(given: str, expected: str) -> bool:
    """Whether ``given`` is ``expected``, in time independent of where they differ."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))


def token_required(host: str, *, allow_unauthenticated: bool = False) -> bool:
    """Whether a server listening on ``host`` must require a token: unless ``host`` is loopback, yes, unless its
    operator opted into lab mode (``allow_unauthenticated``; ``xvla-edge serve`` only)."""
    return not is_loopback(host) and not allow_unauthenticated


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); names other than localhost are not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
