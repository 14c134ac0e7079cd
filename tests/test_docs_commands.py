"""
Every option of every command in the README, the docs and the shipped agent's README is one its tool
accepts: a command copied from the documentation does not stop at "unrecognized arguments".

Checked: lines of fenced code blocks (and indented ones in ``trained-agents/**/README.md``) that run
``python -m <module>`` or ``python scripts/<name>.py [subcommand]``, ``\\``-continued lines joined and
``#`` comments dropped; each ``-x`` / ``--xx`` token (before any ``=``) must be an option string the
tool's own ``--help`` lists. Values and positional arguments are not checked here (the tools' tests
run them).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCED = re.compile(r"^ {0,3}```[^\n]*\n(.*?)^ {0,3}```", re.MULTILINE | re.DOTALL)
INDENTED = re.compile(r"^ {4,}(python .*)$", re.MULTILINE)
OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
SUBCOMMANDS = {"scripts/learning_curve.py": 1}  # words after the script that pick a subcommand


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md")),
            *sorted((ROOT / "trained-agents").glob("**/README.md"))]


def commands(text: str) -> list[str]:
    """The ``python -m`` / ``python scripts/...`` command lines of a page's code, one string each."""
    blocks = FENCED.findall(text) + INDENTED.findall(text)
    lines = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith(("python -m ", "python scripts/")):
                lines.append(line)
    return lines


def tool_and_options(command: str) -> tuple[tuple[str, ...], list[str]]:
    """(the tool: module or script and its subcommand, the options the command gives it)."""
    words = shlex.split(command, comments=True)
    words = words[: words.index("&&")] if "&&" in words else words
    if words[1] == "-m":
        tool, rest = tuple(words[1:3]), words[3:]
    else:
        extra = SUBCOMMANDS.get(words[1], 0)
        tool, rest = tuple(words[1:2 + extra]), words[2 + extra:]
    options = [w.split("=", 1)[0] for w in rest if OPTION.fullmatch(w.split("=", 1)[0])]
    return tool, options


@cache
def accepted(tool: tuple[str, ...]) -> frozenset[str]:
    """The option strings ``tool --help`` lists."""
    out = subprocess.run([sys.executable, *tool, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"{' '.join(tool)} --help failed: {out.stderr[-2000:]}"
    return frozenset(OPTION.findall(out.stdout))


def test_the_parser_reads_commands_as_written():
    text = "```bash\npython -m sb3_breakout.evaluate logs/run -o x.json \\\n    --n-envs 2   # note -q\n```\n"
    assert commands(text) == ["python -m sb3_breakout.evaluate logs/run -o x.json      --n-envs 2   # note -q"]
    assert tool_and_options(commands(text)[0]) == (("-m", "sb3_breakout.evaluate"), ["-o", "--n-envs"])
    assert tool_and_options("python scripts/learning_curve.py report a --solved-at=100 --out b") == (
        ("scripts/learning_curve.py", "report"), ["--solved-at", "--out"])
    assert commands("    python -m rl_zoo3.enjoy --algo qrdqn\n") == ["python -m rl_zoo3.enjoy --algo qrdqn"]


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_documented_option_is_accepted(page):
    wrong = []
    for command in commands(page.read_text()):
        tool, options = tool_and_options(command)
        if tool == ("-m", "pytest"):
            continue  # pytest's options come from its plugins too; the README's test command runs in CI
        unknown = [o for o in options if o not in accepted(tool)]
        if unknown:
            wrong.append(f"{command!r}: {', '.join(unknown)} not accepted by {' '.join(tool)}")
    assert not wrong, "\n".join(wrong)
