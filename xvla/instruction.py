"""The one rule for a language instruction, wherever it enters: robot.toml, the control socket, ``POST
/control``, ``/act`` and the websocket of ``xvla-edge serve``, and ``Policy.act`` itself.

An instruction is valid Unicode text (no lone surrogates: what Python makes of a non-UTF-8 command-line
argument, or what a JSON ``"\\ud800"`` escape decodes to), has no control characters (Unicode category Cc:
newlines, tabs, escapes, DEL, the C1 range), is not blank and has at most :data:`MAX_INSTRUCTION_CHARS`
characters. The model reads only the first ``token_length`` tokens (50 in the released checkpoints, about 200
characters of English); the bound keeps tokenising and logging an instruction cheap, and leaves room for
languages with long words. A refusal is an :class:`~xvla.errors.InputError` naming where the text came from,
the rule and the first offending character.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from xvla.errors import InputError

MAX_INSTRUCTION_CHARS = 1024


def check_instruction(text: Any, where: str = "instruction") -> str:
    """``text`` unchanged when it is a usable instruction; :class:`InputError` naming ``where`` and the rule
    otherwise."""
    if not isinstance(text, str):
        raise InputError(f"{where}: expected text (a string), got {type(text).__name__}")
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise InputError(f"{where}: {len(text)} characters; at most {MAX_INSTRUCTION_CHARS}")
    if not text.strip():
        raise InputError(f"{where}: expected a non-empty instruction, got {'blank text' if text else 'none'}")
    for i, c in enumerate(text):
        kind = unicodedata.category(c)
        if kind == "Cs":
            raise InputError(f"{where}: not valid Unicode text: a lone surrogate U+{ord(c):04X} at character {i} "
                             "(a non-UTF-8 byte from the terminal or a broken JSON escape); send UTF-8 text")
        if kind == "Cc":
            raise InputError(f"{where}: control character U+{ord(c):04X} at character {i}; newlines, tabs, "
                             "escapes and other control characters are not allowed")
    return text
