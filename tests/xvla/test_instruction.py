"""The one instruction rule (:mod:`xvla.instruction`): what it refuses, by name, and what it lets through."""

from __future__ import annotations

import pytest

from xvla.errors import InputError
from xvla.instruction import MAX_INSTRUCTION_CHARS, check_instruction


@pytest.mark.parametrize("text", ["put the cup in the sink", "café au lait", "把杯子放进水槽", "🤖 wave",
                                  "a" * MAX_INSTRUCTION_CHARS, " padded ", "zero\u200bwidth joiner"])
def test_usable_text_passes_unchanged(text):
    assert check_instruction(text) is text


@pytest.mark.parametrize("text, message", [
    ("caf\udce9", r"where: not valid Unicode text: a lone surrogate U\+DCE9 at character 3"),  # Latin-1 argv
    ("\ud800", r"lone surrogate U\+D800 at character 0"),
    ("a\nb", r"control character U\+000A at character 1"),
    ("stop\x1b[2J", r"control character U\+001B at character 4"),
    ("tab\there", r"control character U\+0009"),
    ("del\x7f", r"control character U\+007F"),
    ("c1\x85", r"control character U\+0085"),
    ("", r"where: expected a non-empty instruction, got none"),
    ("   ", r"expected a non-empty instruction, got blank text"),
    ("a" * (MAX_INSTRUCTION_CHARS + 1), rf"where: {MAX_INSTRUCTION_CHARS + 1} characters; at most {MAX_INSTRUCTION_CHARS}"),
    ("x" * 1_000_000, r"1000000 characters"),
    (b"bytes", r"where: expected text \(a string\), got bytes"),
    (None, r"got NoneType"),
    (42, r"got int"),
])
def test_refusals_name_the_source_the_rule_and_the_character(text, message):
    with pytest.raises(InputError, match=message):
        check_instruction(text, "where")
