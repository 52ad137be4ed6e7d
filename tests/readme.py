"""The README's fenced code blocks, as the tests and CI run them.

A block runs as written unless the line just before its fence marks it::

    <!-- readme-test: setup -->     the set-up commands (CI runs them, as a new user would)
    <!-- readme-test: server -->    starts a server: runs until it prints its first line
    <!-- readme-test: cloud -->     needs a cloud account (Dataflow, a real logstore): not run
    <!-- readme-test: pubsub -->    needs the Pub/Sub emulator: run where it is installed

``python -m tests.readme setup`` prints the set-up block's commands, one a line, for
``.ci/run``.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
_FENCE = re.compile(
    r"(?:<!-- readme-test: (?P<mark>[a-z]+) -->\n)?```(?P<lang>[a-z]*)\n(?P<code>.*?)```",
    re.DOTALL,
)
MARKS = {"setup", "server", "cloud", "pubsub"}


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, its code, its mark (``None``: run as written)."""

    lang: str
    code: str
    mark: str | None
    line: int  # where the fence opens, for messages

    @property
    def name(self) -> str:
        return f"README.md:{self.line}:{self.lang or 'text'}"


def blocks(text: str | None = None) -> list[Block]:
    text = README.read_text(encoding="utf-8") if text is None else text
    found = []
    for match in _FENCE.finditer(text):
        mark = match.group("mark")
        if mark is not None and mark not in MARKS:
            raise ValueError(f"unknown readme-test mark {mark!r}; known: {sorted(MARKS)}")
        line = text.count("\n", 0, match.start("lang")) + 1
        found.append(Block(match.group("lang"), match.group("code"), mark, line))
    return found


def setup_commands() -> list[str]:
    """The set-up block's commands: the first runs the main job, the second the tests."""
    [setup] = [b for b in blocks() if b.mark == "setup"]
    return [line for line in setup.code.splitlines() if line.strip()]


if __name__ == "__main__":
    if sys.argv[1:] != ["setup"]:
        raise SystemExit("usage: python -m tests.readme setup")
    print("\n".join(setup_commands()))
