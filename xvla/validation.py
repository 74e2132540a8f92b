"""Checking values that come from outside (a file, a request): what a value may be (:class:`Field`: its kind,
choices, range, a further check), the problems of one source collected and named (:class:`Problems`: where,
the value, what was expected), typed reads of a mapping that record problems instead of raising
(:class:`Table`), and the one way a refused value is shown (:func:`show`).

Standard library only, importing nothing of the project, so every layer may use it, the drivers too (a
library of their own). It raises nothing: a caller turns what it collected into its own error::

    problems = Problems("robot.toml", toml=True)
    root = Table(problems, "", data)
    level = root.table("logging").take("level", str, "info", choices=LEVELS)
    if problems:
        raise ConfigError("\\n".join(problems.lines()))

Kinds: ``int`` is an integer of at most 64 bits and never a bool, ``float`` a finite int or float, ``bool``
only true or false; a value of another kind, outside the choices or the inclusive range ``low ... high``, or
failing ``check`` is refused.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Tuple, TypeVar, Union

INT64 = (-(1 << 63), (1 << 63) - 1)
SHOWN_CHARS = 80  # a shown value longer than this is cut, ending in "..."
KINDS = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false", list: "an array",
         dict: "a table"}
Kind = Union[type, Tuple[type, ...]]
T = TypeVar("T", bound="Table")


def show(value: Any, limit: int = SHOWN_CHARS, *, toml: bool = False) -> str:
    """``value`` as the file or request would write it, shortened to ``limit`` characters: ``true``, ``null``,
    ``"text"``, ``[1, 2]``, ``{"key": 1}`` (``toml``: ``{ key = 1 }``); an array (anything with a non-empty
    ``shape`` and a ``dtype``) by its shape and dtype. The work is bounded by ``limit``, not by the value's size."""
    parts, size = [], 0
    for part in _parts(value, limit, toml):
        parts.append(part)
        size += len(part)
        if size > limit:
            break
    text = "".join(parts)
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def _parts(value: Any, limit: int, toml: bool) -> Iterator[str]:
    if value is None:
        yield "null"
    elif isinstance(value, bool):
        yield "true" if value else "false"
    elif isinstance(value, str):
        yield json.dumps(value[: limit + 1])
    elif isinstance(value, int) and not INT64[0] <= value <= INT64[1]:  # str() refuses over 4300 digits
        yield f"an integer of {value.bit_length()} bits"
    elif getattr(value, "shape", ()) and hasattr(value, "dtype"):
        yield f"an array of shape {list(value.shape)} and dtype {value.dtype}"
    elif isinstance(value, (list, tuple)):
        yield "["
        for i, item in enumerate(value):
            yield ", " if i else ""
            yield from _parts(item, limit, toml)
        yield "]"
    elif isinstance(value, dict):
        yield "{ " if toml and value else "{"
        for i, (key, item) in enumerate(value.items()):
            yield ", " if i else ""
            yield f"{key} = " if toml else f"{show(key, limit)}: "
            yield from _parts(item, limit, toml)
        yield " }" if toml and value else "}"
    elif isinstance(value, (bytes, bytearray)):
        yield repr(bytes(value[: limit + 1]))
    else:
        yield str(value)[: limit + 1]


def is_kind(value: Any, kind: Kind) -> bool:
    """``value`` is of ``kind`` (or one of them) by the rules above."""
    if isinstance(kind, tuple):
        return any(is_kind(value, k) for k in kind)
    if isinstance(value, bool) and kind is not bool:
        return False
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        return False
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, kind)


def one_of(choices: Sequence[Any]) -> str:
    return "one of " + ", ".join(show(c) for c in choices)


@dataclass(frozen=True)
class Field:
    """What one value may be. ``expected`` says it in words (default: from the kind, choices and range)."""

    kind: Kind
    choices: Sequence[Any] = ()
    low: Optional[float] = None
    high: Optional[float] = None
    check: Optional[Callable[[Any], bool]] = None
    expected: str = ""

    def words(self) -> str:
        """What is allowed, e.g. ``an integer 1 ... 1024``, ``one of "fp32", "fp16"``."""
        if self.expected:
            return self.expected
        if self.choices:
            return one_of(self.choices)
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        name = " or ".join(KINDS.get(k, k.__name__) for k in kinds)
        if self.low is not None and self.high is not None:
            return f"{name} {show(self.low)} ... {show(self.high)}"
        if self.low is not None:
            return f"{name} >= {show(self.low)}"
        return name if self.high is None else f"{name} <= {show(self.high)}"

    def accepts(self, value: Any) -> bool:
        return (is_kind(value, self.kind) and (not self.choices or value in self.choices)
                and (self.low is None or value >= self.low) and (self.high is None or value <= self.high)
                and (self.check is None or self.check(value)))

    def refusal(self, where: str, value: Any) -> Optional[Problem]:
        """None when ``value`` is accepted, else the problem naming ``where``, the value and what is expected."""
        return None if self.accepts(value) else Problem(where, f"expected {self.words()}", show(value))


@dataclass(frozen=True)
class Problem:
    """One refusal: ``where`` (a key path), ``why`` (what was expected), ``shown``: the value as :func:`show`
    printed it (None: a place without a value, such as a missing key)."""

    where: str
    why: str
    shown: Optional[str] = None

    def __str__(self) -> str:
        return f"{self.where}: {self.why}" if self.shown is None else f"{self.where} = {self.shown}: {self.why}"


class Problems:
    """The problems of one ``source`` (a file name; "" when the caller names it), in the order found. ``toml``:
    values are shown as TOML writes them."""

    def __init__(self, source: str = "", *, toml: bool = False) -> None:
        self.source, self.toml = source, toml
        self.found: list[Problem] = []

    def value(self, where: str, value: Any, why: str) -> None:
        """A refused value at ``where``."""
        self.found.append(Problem(where, why, show(value, toml=self.toml)))

    def other(self, where: str, why: str) -> None:
        """A problem at ``where`` with no value to show (a missing key, a combination of keys)."""
        self.found.append(Problem(where, why))

    def lines(self) -> list[str]:
        """One line per problem, each starting with the source when there is one."""
        return [f"{self.source}: {p}" if self.source else str(p) for p in self.found]

    def __len__(self) -> int:
        return len(self.found)


class Table:
    """One mapping being read (a TOML table, a JSON object) at key path ``where`` (``"action."``, or ``""`` at
    the root): typed look-ups that record problems and fall back to the default instead of raising, and that
    remember which keys were read, so :meth:`finish` can name the others."""

    def __init__(self, problems: Problems, where: str, data: Mapping[str, Any]) -> None:
        self.problems, self.where, self.data = problems, where, data
        self.read: list[str] = []

    def key(self, name: str) -> str:
        return f"{self.where}{name}"

    def child(self, name: str) -> str:
        """The key path of the sub-table ``name`` (a reader naming it otherwise, ``[section.name].`` in a TOML
        file, overrides this: :meth:`table` makes sub-tables of the reader's own class)."""
        return f"{self.where}{name}."

    def take(self, name: str, kind: Kind, default: Any = None, *, required: bool = False, choices: Sequence[Any] = (),
             low: Optional[float] = None, high: Optional[float] = None, check: Optional[Callable[[Any], bool]] = None,
             expected: str = "") -> Any:
        """The value of ``name`` (a float for kind ``float``), or ``default`` with a problem recorded when it is
        missing while ``required``, or refused by the :class:`Field` the other arguments make."""
        return self.field(name, Field(kind, choices, low, high, check, expected), default, required=required)

    def field(self, name: str, field: Field, default: Any = None, *, required: bool = False) -> Any:
        """:meth:`take` with the :class:`Field` given."""
        self.read.append(name)
        if name not in self.data:
            if required:
                self.problems.other(self.key(name), f"missing: expected {field.words()}")
            return default
        value = self.data[name]
        if not field.accepts(value):
            self.problems.value(self.key(name), value, f"expected {field.words()}")
            return default
        return float(value) if field.kind is float else value

    def table(self: T, name: str, *, required: bool = False, expected: str = "") -> T:
        """The sub-table ``name`` (empty when missing or refused)."""
        data = self.take(name, dict, {}, required=required, expected=expected)
        return type(self)(self.problems, self.child(name), data)

    def report(self, where: str, why: str) -> None:
        """A problem at ``where``: a key of this table (shown with its value), or a place named in full."""
        if where in self.data:
            self.problems.value(self.key(where), self.data[where], why)
        else:
            self.problems.other(where if where.startswith("[") else self.key(where), why)

    def finish(self, elsewhere: Optional[Mapping[str, str]] = None) -> None:
        """Report every key not read; ``elsewhere`` maps keys valid in other cases to where they apply."""
        for name in self.data:
            if name in self.read:
                continue
            if elsewhere and name in elsewhere:
                self.problems.other(self.key(name), f"not used here: {elsewhere[name]}")
                continue
            close = difflib.get_close_matches(name, self.read, n=1)
            hint = f"did you mean {show(close[0])}?" if close else "known keys: " + ", ".join(dict.fromkeys(self.read))
            self.problems.other(self.key(name), f"unknown key ({hint})")
