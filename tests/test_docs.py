"""The documentation stays true to the tree and to the command line.

Pages checked: README.md, docs/**/*.md and benchmarks/results/*/README.md.

Links. Every relative link or image (``[text](target)``, ``![alt](target)``) outside code must name a file or
folder that exists, relative to the page; a ``#anchor`` (alone, or after a Markdown file) must be the slug of
a heading of that page by GitHub's rule: the heading's text without Markdown markup, lower-cased, every
character that is not a letter, digit, ``_``, ``-`` or space dropped, spaces turned into ``-``; a repeated
slug gets ``-1``, ``-2``, ... Links with a scheme (``https:``, ``mailto:``) are not followed.

Commands. Every ``xvla-edge ...`` command line must parse with the real parser of :mod:`xvla_edge.cli`. A
command line is, in a fenced code block, a line (joined with the next while it ends in ``\\``) from the first
word that is ``xvla-edge`` or a path ending in ``/xvla-edge``; outside fenced blocks, an inline code span that
starts with ``xvla-edge``. The line is split as the shell would (``#`` starts a comment); ``&&``, ``||`` and
``;`` end it. Synopsis notation is allowed: ``[...]`` marks what is optional and ``|`` separates
alternatives, so brackets are stripped and a word is split at ``|``. The rule then is:

- the first word after ``xvla-edge`` is a command of the CLI, and the words after it name its sub-commands
  while the parser has them (``config check``, ``fleet status``, ``sim eval``); a positional argument with
  fixed choices (``ctl status``) must be one of them;
- every word starting with ``--`` (before any ``=``) is an option of the (sub-)command reached;
- anything else is a value and is not checked: placeholders such as ``BUNDLE``, ``<dir>`` and ``...`` are
  fine. A placeholder in the command's place (an upper-case word, ``xvla-edge COMMAND --help``) stands for
  any command, and its options must then be ones every command takes.

Length. README.md is at most 250 lines and links every page in docs/ itself (the pages in its folders, such as
docs/arms/, are linked from those pages); no line of these pages is over 120 characters, table rows aside.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path
from typing import Iterator, Optional

import pytest

from xvla_edge.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
MAX_README_LINES = 250
MAX_LINE = 120

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$")


def pages() -> list[Path]:
    found = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")),
             *sorted((REPO / "benchmarks" / "results").glob("*/README.md"))]
    return [p for p in found if p.is_file()]


def without_code(text: str) -> str:
    """The text with fenced blocks and inline code spans blanked (their contents are not links or headings)."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return INLINE_CODE.sub(lambda m: " " * len(m.group(0)), text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = re.sub(r"[`*]|(?<!\w)_|_(?!\w)", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def headings_of(text: str) -> set[str]:
    """Every anchor a page's headings define (a repeated heading's slug gets -1, -2, ...)."""
    result: set[str] = set()
    counts: dict[str, int] = {}
    for heading in HEADING.findall(FENCE.sub("", text)):
        base = slug(heading)
        n = counts.get(base, 0)
        counts[base] = n + 1
        result.add(base if n == 0 else f"{base}-{n}")
    return result


def broken_links(text: str, page: Path) -> list[str]:
    """Every relative link of ``text`` (the page ``page``) that names no existing file or heading."""
    problems = []
    for target in LINK.findall(without_code(text)):
        if SCHEME.match(target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            problems.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in headings_of(dest.read_text()):
            problems.append(f"{target}: no heading #{anchor} in {dest.name}")
    return problems


def command_lines(text: str) -> Iterator[str]:
    """The ``xvla-edge`` command lines of a page (see the module's docstring)."""
    for block in FENCE.finditer(text):
        lines = block.group(0).splitlines()[1:-1]
        joined: list[str] = []
        for line in lines:
            if joined and joined[-1].endswith("\\"):
                joined[-1] = joined[-1][:-1] + " " + line.strip()
            else:
                joined.append(line)
        for line in joined:
            words = split(line)
            start = next((i for i, w in enumerate(words) if w == "xvla-edge" or w.endswith("/xvla-edge")), None)
            if start is not None:
                yield " ".join(shlex.quote(w) for w in ["xvla-edge", *words[start + 1:]])
    for match in INLINE_CODE.finditer(FENCE.sub("", text)):
        code = " ".join(match.group(2).split())
        if code.startswith("xvla-edge "):
            yield code


def split(line: str) -> list[str]:
    try:
        words = shlex.split(line, comments=True)
    except ValueError:  # an unbalanced quote in prose-like text: words as they stand
        words = line.split("#", 1)[0].split()
    for i, word in enumerate(words):
        if word in ("&&", "||", ";"):
            return words[:i]
    return words


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def sub_commands(parser: argparse.ArgumentParser) -> Optional[dict[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return None


def first_choices(parser: argparse.ArgumentParser) -> Optional[list[str]]:
    positionals = [a for a in parser._actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]
    return list(positionals[0].choices) if positionals and positionals[0].choices else None


def command_problems(line: str, parser: argparse.ArgumentParser) -> list[str]:
    """What in one ``xvla-edge`` command line the CLI would not take (empty: it parses)."""
    words = [part for word in shlex.split(line)[1:] for part in word.strip("[]()").split("|") if part]
    path = ["xvla-edge"]
    allowed = options(parser)
    subs = sub_commands(parser)
    choices = None
    problems = []
    for word in words:
        if word.startswith("--"):
            flag = word.split("=", 1)[0]
            if flag not in allowed:
                problems.append(f"{' '.join(path)}: no option {flag}")
            continue
        if word.startswith("-"):
            continue
        if subs is not None:
            if word in subs:
                parser = subs[word]
                path.append(word)
                allowed, subs, choices = options(parser), sub_commands(parser), first_choices(parser)
            elif PLACEHOLDER.match(word) and len(path) == 1:
                every = [options(p) for p in subs.values()]
                allowed, subs = set.intersection(*every), None
                path.append(word)
            else:
                problems.append(f"{' '.join(path)}: no command {word!r}")
                subs = None
            continue
        if choices is not None:
            if word not in choices and not PLACEHOLDER.match(word):
                problems.append(f"{' '.join(path)}: {word!r} is not one of {', '.join(choices)}")
            choices = None
    return problems


@pytest.fixture(scope="module")
def cli() -> argparse.ArgumentParser:
    return build_parser()[0]


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    assert broken_links(page.read_text(), page) == []


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_command_line_parses_with_the_cli(page, cli):
    problems = [f"{line}\n    {p}" for line in command_lines(page.read_text()) for p in command_problems(line, cli)]
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_lines_are_at_most_120_characters(page):
    long = [f"{n}: {len(line)}" for n, line in enumerate(page.read_text().splitlines(), 1)
            if len(line) > MAX_LINE and not line.startswith("|")]
    assert long == []


def test_the_readme_is_a_front_door():
    """At most 250 lines, and it links every page under docs/."""
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= MAX_README_LINES
    linked = {target.partition("#")[0] for target in LINK.findall(without_code(readme))}
    assert [p.name for p in sorted((REPO / "docs").glob("*.md")) if f"docs/{p.name}" not in linked] == []


def test_the_checks_find_a_planted_bad_link_and_a_planted_unknown_flag(cli, tmp_path):
    """The checks above are only worth something if they fail on a broken page."""
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# Here `it` is: the *one*\n\n## Here it is\n\n## Here it is\n")
    page.write_text("# Top\n\n[fine](there.md#here-it-is-the-one) [fine](there.md#here-it-is-1) [self](#top)\n"
                    "[gone](missing.md) [no heading](there.md#nowhere) [web](https://example.org/x)\n"
                    "`[in code](missing.md)`\n\n```bash\nxvla-edge info BUNDLE --verfy  # a typo\n"
                    "sudo /opt/v/bin/xvla-edge flash BUNDLE --robot DIR \\\n    [--device cpu|cuda] [--bogus N]\n"
                    "xvla-edge ctl status --json\nxvla-edge ctl launch\n```\n\n"
                    "Run `xvla-edge config check robot.toml`, `xvla-edge confg check` and\n"
                    "`xvla-edge COMMAND --help`, not `xvla-edge COMMAND --verify`.\n")
    text = page.read_text()
    assert broken_links(text, page) == ["missing.md: no such file", "there.md#nowhere: no heading #nowhere in there.md"]
    found = [p for line in command_lines(text) for p in command_problems(line, cli)]
    assert found == ["xvla-edge info: no option --verfy", "xvla-edge flash: no option --bogus",
                     "xvla-edge ctl: 'launch' is not one of " + ", ".join(first_choices(build_sub(cli, "ctl"))),
                     "xvla-edge: no command 'confg'", "xvla-edge COMMAND: no option --verify"]


def build_sub(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    subs = sub_commands(parser)
    assert subs is not None
    return subs[name]
