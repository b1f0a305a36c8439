"""Reading a policy file: TOML syntax via :mod:`tomllib`, and the line each key is on.

tomllib returns plain values without positions, and pydantic reports a problem as a path of
keys and indexes (``("rules", 2, "match", "domains")``). People fix files by line, so
:func:`key_lines` re-reads the source that tomllib accepted and records the line of every
table header, key and array element under the same paths, including the indexes of
``[[rules]]`` arrays of tables. :func:`line_of` then answers with the nearest recorded
ancestor of a path (a missing key points at its table).
"""

from __future__ import annotations

import bisect
import contextlib
import re
import tomllib
from typing import Any

from ..errors import PolicyFileError

__all__ = ["Loc", "field_path", "key_lines", "line_of", "parse"]

Loc = tuple[str | int, ...]

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column \d+\)$")
_AT_END = " (at end of document)"
_HEADER = re.compile(r"\s*\[\[?\s*([^\]]*?)\s*\]")
_KEY_LINE = re.compile(r"\s*([A-Za-z0-9_.\-\"' ]+?)\s*=")


def parse(text: str, source: str) -> dict[str, Any]:
    """The TOML document, or a :class:`PolicyFileError` at tomllib's line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        position = _TOML_POSITION.search(message)
        if position:
            line: int | None = int(position[1])
        elif message.endswith(_AT_END):
            line = text.count("\n") + (0 if text.endswith("\n") else 1)
        else:
            line = None
        reason = _TOML_POSITION.sub("", message).removesuffix(_AT_END)
        field = _field_on_line(text, line) if line else ""
        raise PolicyFileError(source, line, field, f"TOML syntax: {reason}") from None


def _field_on_line(text: str, line: int) -> str:
    """Best effort for a file tomllib refused: the nearest table header above ``line`` and
    the key on it, e.g. ``rules.match.domains``."""
    lines = text.splitlines()
    if line > len(lines):
        return ""
    table = ""
    for previous in lines[: line - 1]:
        if header := _HEADER.match(previous):
            table = header[1].replace(" ", "")
    key_match = _KEY_LINE.match(lines[line - 1])
    if not key_match or lines[line - 1].lstrip().startswith("["):
        return table
    key = key_match[1].replace(" ", "").replace('"', "").replace("'", "")
    return f"{table}.{key}" if table else key


def field_path(loc: Loc) -> str:
    """``("rules", 2, "match", "domains")`` as ``rules[2].match.domains``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else part
    return path


def line_of(lines: dict[Loc, int], loc: Loc) -> int | None:
    """The line of ``loc``, or of its nearest recorded ancestor."""
    for end in range(len(loc), 0, -1):
        if (found := lines.get(loc[:end])) is not None:
            return found
    return None


def key_lines(text: str) -> dict[Loc, int]:
    """The line of each header, key and array element of a document tomllib accepted.

    Never raises: on anything it does not understand it returns what it has found so far
    (the error then points at an ancestor, or has no line).
    """
    scanner = _Scanner(text)
    with contextlib.suppress(IndexError, ValueError):
        scanner.document()
    return scanner.found


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR = re.compile(r"[^,\]}\n#]+")


class _Scanner:
    """A recursive-descent walk over valid TOML that records positions, not values."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.found: dict[Loc, int] = {}
        self._newlines = [i for i, char in enumerate(text) if char == "\n"]
        self._array_tables: dict[Loc, int] = {}  # path -> number of [[path]] headers so far

    def line(self) -> int:
        return bisect.bisect_right(self._newlines, self.pos - 1) + 1

    def record(self, loc: Loc, line: int) -> None:
        self.found.setdefault(loc, line)

    def peek(self, token: str) -> bool:
        return self.text.startswith(token, self.pos)

    def expect(self, token: str) -> None:
        if not self.peek(token):
            raise ValueError(f"expected {token!r} at {self.pos}")
        self.pos += len(token)

    def skip(self, *, newlines: bool) -> None:
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in " \t\r" or (newlines and char == "\n"):
                self.pos += 1
            elif char == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                return

    def document(self) -> None:
        table: Loc = ()
        while True:
            self.skip(newlines=True)
            if self.pos >= len(self.text):
                return
            line = self.line()
            if self.peek("[["):
                self.pos += 2
                table = self._resolve(self.key(), new_element=True)
                self.skip(newlines=False)
                self.expect("]]")
                self.record(table[:-1], line)
                self.record(table, line)
            elif self.peek("["):
                self.pos += 1
                table = self._resolve(self.key(), new_element=False)
                self.skip(newlines=False)
                self.expect("]")
                self.record(table, line)
            else:
                self.assignment(table)

    def _resolve(self, keys: list[str], *, new_element: bool) -> Loc:
        path: list[str | int] = []
        for index, key in enumerate(keys):
            path.append(key)
            here = tuple(path)
            if new_element and index == len(keys) - 1:
                count = self._array_tables.get(here, 0)
                self._array_tables[here] = count + 1
                path.append(count)
            elif here in self._array_tables:
                path.append(self._array_tables[here] - 1)
        return tuple(path)

    def key(self) -> list[str]:
        keys: list[str] = []
        while True:
            self.skip(newlines=False)
            if self.peek('"'):
                keys.append(self.basic_string())
            elif self.peek("'"):
                end = self.text.index("'", self.pos + 1)
                keys.append(self.text[self.pos + 1 : end])
                self.pos = end + 1
            else:
                match = _BARE_KEY.match(self.text, self.pos)
                if match is None:
                    raise ValueError(f"expected a key at {self.pos}")
                keys.append(match.group())
                self.pos = match.end()
            self.skip(newlines=False)
            if not self.peek("."):
                return keys
            self.pos += 1

    def assignment(self, table: Loc) -> None:
        line = self.line()
        loc = table + tuple(self.key())
        self.expect("=")
        for end in range(len(table) + 1, len(loc) + 1):  # a.b = 1 also defines table a
            self.record(loc[:end], line)
        self.skip(newlines=False)
        self.value(loc)

    def value(self, loc: Loc) -> None:
        if self.peek('"""') or self.peek("'''"):
            quote = self.text[self.pos : self.pos + 3]
            self.pos += 3
            while not self.peek(quote):
                self.pos += 2 if quote == '"""' and self.peek("\\") else 1
                if self.pos >= len(self.text):
                    raise ValueError("unterminated string")
            self.pos += 3
            while self.peek(quote[0]):  # up to two quotes may end the content
                self.pos += 1
        elif self.peek('"'):
            self.basic_string()
        elif self.peek("'"):
            self.pos = self.text.index("'", self.pos + 1) + 1
        elif self.peek("["):
            self.pos += 1
            index = 0
            while True:
                self.skip(newlines=True)
                if self.peek("]"):
                    break
                self.record((*loc, index), self.line())
                self.value((*loc, index))
                self.skip(newlines=True)
                if self.peek(","):
                    self.pos += 1
                    index += 1
                elif not self.peek("]"):
                    raise ValueError(f"expected ',' or ']' at {self.pos}")
            self.pos += 1
        elif self.peek("{"):
            self.pos += 1
            while True:
                self.skip(newlines=True)
                if self.peek("}"):
                    break
                self.assignment(loc)
                self.skip(newlines=True)
                if self.peek(","):
                    self.pos += 1
                elif not self.peek("}"):
                    raise ValueError(f"expected ',' or '}}' at {self.pos}")
            self.pos += 1
        else:
            match = _SCALAR.match(self.text, self.pos)
            if match is None:
                raise ValueError(f"expected a value at {self.pos}")
            self.pos = match.end()

    def basic_string(self) -> str:
        start = self.pos + 1
        self.pos = start
        while not self.peek('"'):
            self.pos += 2 if self.peek("\\") else 1
            if self.pos >= len(self.text):
                raise ValueError("unterminated string")
        self.pos += 1
        return self.text[start : self.pos - 1]
