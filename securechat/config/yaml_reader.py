"""The one YAML reader behind every securechat config: bounded, strict, and it reports every problem.

`read_yaml(path)` reads a config file through `securechat.files` (a regular
file of at most `files.CONFIG_LIMIT` bytes: a FIFO, `/dev/zero` or a 50 MB
file is refused in one line) and parses it with PyYAML's safe loader (its
libyaml parser when PyYAML has it, some ten times faster; any error is
worded by the pure-Python one), with these bounds checked while the document
is composed, before any Python object is built:

- nesting depth at most `MAX_DEPTH` (a 100,000-deep `[[[[...` would hit
  Python's recursion limit);
- at most `MAX_NODES` nodes once aliases are expanded, so a "billion laughs"
  document (anchors of anchors, 10^9 nodes from a few hundred bytes) is
  refused in milliseconds instead of being walked for minutes;
- no recursive aliases (`&a [*a]`);
- a key given twice is an error, never a silent override.

`Section` reads one mapping of the document: unknown keys (with the nearest
valid key as a hint), wrong types and out-of-range values are recorded in a
shared `Problems` list instead of being raised at once, so a file with three
mistakes is reported with three lines. A section accessor that found a
problem returns its default, and the loader raises `ConfigError` (carrying
every problem) before it returns a config. Relative paths resolve against
the config file's own directory.

What is not done here: reading the files a config names (certificates, keys,
CRLs) -- `securechat.tls` does that when the server or client starts.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, overload

import yaml

from securechat.config.address import Address, parse_address
from securechat.errors import ConfigError, ConfigProblem, InputFileError
from securechat.files import CONFIG_LIMIT, read_regular_file

MAX_DEPTH = 64
"""Nesting levels of mappings and lists (the document's mapping is the first); a securechat config uses four."""
MAX_NODES = 100_000
"""Nodes in the document with every alias expanded; a large authz list is a few thousand."""

READ_FIX = "Check its permissions and encoding."
NOT_FOUND_FIX = "Run 'securechat quickstart --dir DIR' to make one, or fix the path."


class Problems:
    """Every problem found in one config file, in the order found."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self._items: list[ConfigProblem] = []

    def add(self, field: str | None, problem: str, fix: str = "", *, source: str | None = None) -> None:
        """Record a problem with FIELD of this file (or of SOURCE, e.g. a flag such as '--listen')."""
        self._items.append(ConfigProblem(self.source.name if source is None else source, field, problem, fix))

    def add_error(self, error: ConfigError) -> None:
        """Record every problem of ERROR (from a part of the config checked elsewhere)."""
        self._items.extend(error.problems)

    def __bool__(self) -> bool:
        return bool(self._items)

    def raise_if_any(self) -> None:
        """Raise one ConfigError carrying every problem recorded, if there is any."""
        if self._items:
            raise ConfigError.from_problems(self._items)


class _BoundExceeded(yaml.composer.ComposerError):
    """A document over one of the reader's bounds (depth, expanded size, recursive alias)."""


def _mark(mark: object) -> yaml.error.Mark | None:
    """MARK as PyYAML's own Mark (libyaml's events carry a C one with the same fields)."""
    if isinstance(mark, yaml.error.Mark) or mark is None:
        return mark
    line, column = getattr(mark, "line", 0), getattr(mark, "column", 0)
    return yaml.error.Mark(str(getattr(mark, "name", "")), getattr(mark, "index", 0), line, column, None, 0)


class _Bounds(yaml.composer.Composer, yaml.constructor.SafeConstructor):
    """The bounds and the duplicate-key rule, over whichever parser (C or Python) feeds the events."""

    def _init_bounds(self) -> None:
        self._depth = 0
        self._expanded = 0
        # id(node) -> nodes it stands for once expanded; a node composed but not
        # yet finished has no entry, so an alias to it is recursive.
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # Called once per node of the document: kept lean (marks are converted only to raise).
        event = self.peek_event()  # type: ignore[attr-defined]
        if event.__class__ is yaml.AliasEvent:
            target = self.anchors.get(event.anchor)
            if target is not None:
                size = self._sizes.get(id(target))
                if size is None:
                    raise _BoundExceeded(
                        None,
                        None,
                        f"alias '*{event.anchor}' refers to the node that contains it",
                        _mark(event.start_mark),
                    )
                self._count(size, event)
            return super().compose_node(parent, index)
        # Only mappings and lists nest: the document's own mapping is level 1.
        level = 0 if event.__class__ is yaml.ScalarEvent else 1
        self._depth += level
        if self._depth > MAX_DEPTH:
            raise _BoundExceeded(None, None, f"nesting is deeper than {MAX_DEPTH} levels", _mark(event.start_mark))
        before = self._expanded
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= level
        self._count(1, event)
        if node is not None:
            self._sizes[id(node)] = self._expanded - before
        return node

    def _count(self, nodes: int, event: yaml.Event) -> None:
        self._expanded += nodes
        if self._expanded > MAX_NODES:
            raise _BoundExceeded(
                None, None, f"more than {MAX_NODES:,} values once aliases are expanded", _mark(event.start_mark)
            )

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # SafeLoader's own construct_mapping reports the unhashable key
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key '{key}' (the second would silently replace the first)",
                    _mark(key_node.start_mark),
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _PythonLoader(_Bounds, yaml.SafeLoader):
    """The pure-Python safe loader with the bounds: its error messages are the ones users see."""

    def __init__(self, stream: str) -> None:
        yaml.SafeLoader.__init__(self, stream)
        self._init_bounds()


try:  # libyaml's parser, when PyYAML was built with it (the wheels are)
    from yaml._yaml import CParser as _CParser
except ImportError:  # pragma: no cover - a PyYAML without libyaml
    _CParser = None  # type: ignore[assignment,misc]

if _CParser is not None:

    class _CLoader(_Bounds, _CParser, yaml.resolver.Resolver):
        """libyaml's parser (about ten times faster) under the same composer, bounds and constructor."""

        def __init__(self, stream: str) -> None:
            _CParser.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            self._init_bounds()


def _load(loader_class: Callable[[str], _Bounds], text: str) -> object:
    loader = loader_class(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()  # type: ignore[attr-defined]


def _parse(text: str) -> object:
    """The document in TEXT, parsed by libyaml when it is there; PyYAML's own words for any error."""
    if _CParser is not None:
        try:
            return _load(_CLoader, text)
        except _BoundExceeded:
            raise
        except yaml.YAMLError:
            pass  # parsed again below, for PyYAML's wording of the error (and the same bounds)
    return _load(_PythonLoader, text)


def read_yaml(path: Path) -> object:
    """The document in the config file at PATH; ConfigError (one problem) if it cannot be read or parsed."""
    try:
        raw = read_regular_file(path, limit=CONFIG_LIMIT, what="config")
    except FileNotFoundError as exc:
        raise ConfigError(str(path), None, "config file not found.", NOT_FOUND_FIX) from exc
    except InputFileError as exc:
        raise ConfigError(str(path), None, exc.problem, exc.fix) from exc
    except IsADirectoryError as exc:
        raise ConfigError(
            str(path),
            None,
            "is a directory, not a config file.",
            f"Pass the YAML file in it, e.g. --config {path / 'alice.yaml'}.",
        ) from exc
    except OSError as exc:
        raise ConfigError(
            str(path), None, f"cannot read the config file ({exc.__class__.__name__}).", READ_FIX
        ) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), None, "cannot read the config file (UnicodeDecodeError).", READ_FIX) from exc
    try:
        data = _parse(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        fix = "Remove one of them." if "duplicate key" in problem else "Fix the syntax (indentation, colons, quotes)."
        if "aliases are expanded" in problem or "refers to the node" in problem:
            fix = "Write the values out instead of repeating anchors and aliases."
        elif "nesting is deeper" in problem:
            fix = "A securechat config nests a few levels; check the brackets and indentation."
        raise ConfigError(path.name, None, f"is not valid YAML{where}: {problem}.", fix) from exc
    except (ValueError, OverflowError) as exc:
        # PyYAML builds ints and timestamps with int() and datetime(): a
        # 5,000-digit number or 2024-13-45 fails there, outside its own errors.
        raise ConfigError(
            path.name,
            None,
            f"is not valid YAML: a value cannot be read ({_first_line(exc)}).",
            "Fix or quote the value.",
        ) from exc
    if data is None:
        # An empty (or comments-only) file is a wrong path or a truncated write,
        # not a request for defaults: say so instead of "tls: missing".
        raise ConfigError(
            path.name,
            None,
            "is empty.",
            "Run 'securechat quickstart --dir DIR' for a working example, or fix the path.",
        )
    return data


def _first_line(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    if "integer string conversion" in text:
        return "a number has more than 4,300 digits"
    return text[:80]


def flag_address(problems: Problems, flag: str, text: str) -> Address | None:
    """TEXT given as FLAG (e.g. --listen) as an Address; None and a problem naming the flag if it is not one."""
    try:
        return parse_address(text)
    except ValueError as exc:
        problems.add(None, str(exc), source=flag)
        return None


def config_source(path: str | os.PathLike[str]) -> Path:
    """The config file's absolute path, symlinks kept (see `Section.path`)."""
    return Path(os.path.abspath(path))


def kind_of(value: object) -> str:
    """How a YAML value is named in an error: 'a mapping', 'a list', 'a string', 'a number', ..."""
    names = {dict: "a mapping", list: "a list", str: "a string", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def shown(value: object, limit: int = 60) -> str:
    """repr(VALUE) cut to LIMIT characters, so an error stays one short line whatever the file holds."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quoted(text: str, limit: int = 80) -> str:
    """TEXT in single quotes for an error; repr() if it holds a newline, escape or other unprintable character."""
    if text.isprintable() and len(text) <= limit:
        return f"'{text}'"
    return shown(text, limit)


def _key_text(key: object) -> str:
    # repr() for odd keys, so the error stays one printable line.
    return key if isinstance(key, str) and key.isprintable() and len(key) <= 60 else shown(key)


_DURATION = re.compile(r"(\d{1,12}(?:\.\d{1,9})?)\s*(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_FIX = "Write seconds (30) or a duration such as 30s, 15m, 24h, 7d."


class Section:
    """One mapping of a config document, naming its fields by their dotted path.

    Problems are recorded in PROBLEMS; an accessor that finds one returns its
    default. Unknown keys are recorded when the section is made.
    """

    def __init__(
        self,
        problems: Problems,
        data: object,
        prefix: str,
        allowed: Sequence[str],
        *,
        nested: Mapping[str, str] | None = None,
    ) -> None:
        """NESTED: keys that belong one level down (server_name -> tls.server_name), named as the fix."""
        self.problems = problems
        self.prefix = prefix
        self.allowed = tuple(allowed)
        self.suggested: set[str] = set()
        """Keys offered as 'Did you mean' for an unknown key: their own 'missing' is not reported too."""
        self.data: Mapping[object, object] = {}
        self.is_mapping = True
        """False if the section is not a mapping (a problem already said so): nothing in it is 'missing' then."""
        if data is None:
            return
        if not isinstance(data, Mapping):
            self.problem(None, f"must be a mapping of keys to values, got {kind_of(data)}.")
            self.is_mapping = False
            return
        self.data = data
        for key in data:
            if key not in self.allowed:
                near = difflib.get_close_matches(str(key), self.allowed, n=1)
                if nested and key in nested:
                    hint = f"Did you mean '{nested[key]}'? It goes in the {nested[key].split('.')[0]}: section."
                elif near:
                    self.suggested.add(near[0])
                    hint = f"Did you mean '{self.name(near[0])}'?"
                else:
                    hint = f"Valid keys: {', '.join(self.allowed)}."
                self.problem(_key_text(key), "unknown key.", hint)

    @property
    def source(self) -> Path:
        return self.problems.source

    def name(self, key: str | None) -> str | None:
        """KEY's dotted path, e.g. 'tls.cert'; the section's own path for None."""
        if key is None:
            return self.prefix or None
        return f"{self.prefix}.{key}" if self.prefix else key

    def problem(self, key: str | None, problem: str, fix: str = "") -> None:
        """Record a problem with KEY (None: the section itself)."""
        self.problems.add(self.name(key), problem, fix)

    def missing(self, key: str, problem: str, fix: str = "") -> None:
        """Record that KEY is missing, unless a misspelt key was already taken for it."""
        if self.is_mapping and key not in self.suggested:
            self.problem(key, problem, fix)

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str) -> object:
        """KEY's value as parsed, unchecked (None when absent)."""
        return self.data.get(key)

    def section(self, key: str, allowed: Sequence[str]) -> Section:
        return Section(self.problems, self.data.get(key), self.name(key) or key, allowed)

    def _typed(self, key: str, kind: type | tuple[type, ...], expected: str) -> object:
        """KEY's value if it is a KIND; None (a problem recorded) if it is not; None if absent."""
        value = self.data.get(key)
        if value is None:
            return None
        # bool is an int in Python; YAML's `yes` must not pass as a port.
        if isinstance(value, bool) and kind is not bool:
            self.problem(key, f"expected {expected}, got a boolean ({value}).")
            return None
        if not isinstance(value, kind):
            self.problem(key, f"expected {expected}, got {kind_of(value)} ({shown(value)}).")
            return None
        return value

    @overload
    def string(self, key: str) -> str | None: ...
    @overload
    def string(self, key: str, default: str) -> str: ...
    def string(self, key: str, default: str | None = None) -> str | None:
        value = self._typed(key, str, "a string")
        if not isinstance(value, str):
            return default
        if not value.strip():
            self.problem(key, "must not be empty.")
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._typed(key, bool, "true or false")
        return value if isinstance(value, bool) else default

    @overload
    def integer(self, key: str, default: int, *, minimum: int, maximum: int) -> int: ...
    @overload
    def integer(self, key: str, default: None, *, minimum: int, maximum: int) -> int | None: ...
    def integer(self, key: str, default: int | None, *, minimum: int, maximum: int) -> int | None:
        value = self._typed(key, int, "a whole number")
        if not isinstance(value, int):
            return default
        if not minimum <= value <= maximum:
            self.problem(key, f"{_number_text(value)} is out of range; use {minimum} to {maximum}.")
            return default
        return value

    def number(self, key: str, default: float, *, minimum: float, maximum: float) -> float:
        value = self._typed(key, (int, float), "a number")
        if not isinstance(value, int | float):
            return default
        number = float(value) if isinstance(value, float) or abs(value) < 2**53 else math.inf
        if not minimum <= number <= maximum:  # NaN compares false: out of range too
            self.problem(key, f"{_number_text(value, as_float=True)} is out of range; use {minimum} to {maximum}.")
            return default
        return number

    def choice(self, key: str, choices: Sequence[str], default: str) -> str:
        value = self._typed(key, str, "a string")
        if not isinstance(value, str):
            return default
        if value not in choices:
            self.problem(key, f"{quoted(value)} is not one of {', '.join(choices)}.")
            return default
        return value

    def path(self, key: str) -> Path | None:
        value = self.string(key)
        if value is None:
            return None
        path = Path(value).expanduser()
        # normpath, not resolve(): symlinks must stay symlinks, so a Kubernetes
        # `..data` swap or a `current -> v2` link is followed at every read.
        return path if path.is_absolute() else Path(os.path.normpath(self.source.parent / path))

    def address(self, key: str, default: str | None) -> Address | None:
        # `listen:` with no value is YAML null: treat it as absent, like every other key.
        value = self.data.get(key)
        if value is None:
            value = default
        if value is None:
            return None
        if not isinstance(value, str):
            self.problem(key, f"expected HOST:PORT as a string, got {kind_of(value)} ({shown(value)}).")
            return None
        try:
            return parse_address(value)
        except ValueError as exc:
            self.problem(key, str(exc))
            return None

    @overload
    def duration(self, key: str, default: float, *, minimum: float, maximum: float = math.inf) -> float: ...
    @overload
    def duration(self, key: str, default: None, *, minimum: float, maximum: float = math.inf) -> float | None: ...
    def duration(self, key: str, default: float | None, *, minimum: float, maximum: float = math.inf) -> float | None:
        """A number of seconds, or a string like '90s', '15m', '24h', '7d', '250ms'."""
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            self.problem(key, f"expected a duration, got a boolean ({value}).", DURATION_FIX)
            return default
        if isinstance(value, int | float):
            seconds = float(value) if isinstance(value, float) or abs(value) < 2**53 else math.inf
        elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
            seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        else:
            self.problem(key, f"expected a duration, got {kind_of(value)} ({shown(value)}).", DURATION_FIX)
            return default
        if not minimum <= seconds <= maximum:
            top = "" if math.isinf(maximum) else f" to {maximum:g}"
            self.problem(key, f"{_number_text(value)} is out of range; use {minimum:g}{top} seconds.")
            return default
        return seconds


def _number_text(value: object, *, as_float: bool = False) -> str:
    """A number as an error shows it: whole, as float() writes it, or cut short if it is huge."""
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) >= 10**30:
            try:
                digits = str(len(str(abs(value))))
            except ValueError:  # str() of an int is refused past 4,300 digits
                digits = "4,300+"
            return f"{'-' if value < 0 else ''}a {digits}-digit number"
        return f"{float(value)}" if as_float else str(value)
    return str(value)
