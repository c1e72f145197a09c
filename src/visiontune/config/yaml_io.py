"""YAML text of configs: read a file safely, parse it like ``yaml.safe_load`` with limits, keep lines and texts.

A config is small and flat, so hostile or broken input ends fast with one line naming the file (or override):
a file that is not a regular file, too large, or not UTF-8; a key given twice; collections nested deeper than
:data:`MAX_NESTING`; aliases (``*name``) that expand to more than :data:`MAX_ALIAS_VALUES` values (a "billion
laughs" document), or that refer to the collection containing them.
"""

from __future__ import annotations

import codecs
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from visiontune.config.errors import ConfigError

__all__ = [
    "MAX_ALIAS_VALUES",
    "MAX_CONFIG_BYTES",
    "MAX_NESTING",
    "DuplicateKeyError",
    "InvalidYamlError",
    "ScalarTexts",
    "UniqueKeyLoader",
    "YamlDocument",
    "load_yaml",
    "parse_yaml",
    "read_config_text",
]

logger = logging.getLogger(__name__)

MAX_NESTING = 32
"""The deepest nesting of collections (and of the parts of a dotted key) a config may have; real ones use 4."""
MAX_ALIAS_VALUES = 10_000
"""The most values (scalars and collections) that the aliases of one document may repeat."""
MAX_CONFIG_BYTES = 8 * 1024 * 1024
"""The largest config file read (real ones have a few KB)."""

_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"


class DuplicateKeyError(ConfigError):
    """A YAML mapping gives one key twice (:class:`UniqueKeyLoader`)."""


class InvalidYamlError(ConfigError):
    """Text that is not valid YAML, or that nests or repeats beyond the limits of a config.

    Attributes:
        problem: what YAML found, with its place: ``(line 1, column 13): while parsing a flow mapping; ...``.
    """

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: invalid YAML{problem}")
        self.source = source
        self.problem = problem

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return type(self), (self.source, self.problem)  # pickles (an error sent between processes)


def _limit_error(problem: str, mark: Any) -> yaml.MarkedYAMLError:
    """The error of a document beyond a limit, at ``mark`` (its messages read like YAML's own)."""
    return yaml.MarkedYAMLError(None, None, problem, mark)


_TOO_DEEP = f"collections nested deeper than {MAX_NESTING} levels (a config needs a few)"


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` semantics, but a key given twice in one mapping (at any depth) is an error naming both
    lines, instead of the last one winning silently. Merge keys (``<<: *base``) may still be overridden.

    Reading stops early with a ``MarkedYAMLError`` when collections nest deeper than :data:`MAX_NESTING`, when the
    aliases repeat more than :data:`MAX_ALIAS_VALUES` values, or when an alias refers to the collection it is in.
    Use :func:`parse_yaml`, which also tells it the dotted path of every mapping for the message.
    """

    source = "<string>"
    line_numbers = True
    paths: dict[int, str]

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0
        self.alias_values = 0
        self.sizes: dict[int, int] = {}  # id(node) -> its values counted with what its aliases repeat
        self.open_anchors: set[str] = set()

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._count_alias(event)
            return super().compose_node(parent, index)
        if not isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            return super().compose_node(parent, index)
        if self.depth >= MAX_NESTING:
            raise _limit_error(_TOO_DEEP, event.start_mark)
        anchor = event.anchor
        self.depth += 1
        if anchor is not None:
            self.open_anchors.add(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
            self.open_anchors.discard(anchor or "")
        children = ([child for pair in node.value for child in pair] if isinstance(node, yaml.MappingNode)
                    else getattr(node, "value", []))
        self.sizes[id(node)] = 1 + sum(self.sizes.get(id(child), 1) for child in children)
        return node

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        """The scanner refuses deep ``[[[...`` as it reads them (it looks ahead, quadratically in the depth)."""
        if self.flow_level >= MAX_NESTING:
            raise _limit_error(_TOO_DEEP, self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def _count_alias(self, event: yaml.AliasEvent) -> None:
        if event.anchor in self.open_anchors:
            raise _limit_error(f"alias *{event.anchor} refers to the collection that contains it", event.start_mark)
        node = self.anchors.get(event.anchor)
        self.alias_values += self.sizes.get(id(node), 1)
        if self.alias_values > MAX_ALIAS_VALUES:
            raise _limit_error(f"the aliases (here *{event.anchor}) repeat more than {MAX_ALIAS_VALUES} values; a "
                               "config needs far fewer", event.start_mark)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the constructor reports it
                continue
            if first is not None:
                name = getattr(self, "paths", {}).get(id(node), "") + str(key)
                lines = first.start_mark.line + 1, key_node.start_mark.line + 1
                where = (f"{self.source}:{lines[0]} and {self.source}:{lines[1]}" if self.line_numbers
                         else self.source)
                raise DuplicateKeyError(f"{where}: key {name!r} is given twice")
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def _describe_yaml_error(error: yaml.YAMLError, text: str) -> str:
    """One line: ``(line 3, column 5): mapping values are not allowed here``."""
    if isinstance(error, yaml.reader.ReaderError) and isinstance(error.character, int):
        before = text[:error.position]
        line, column = before.count("\n") + 1, error.position - (before.rfind("\n") + 1) + 1
        kind = "a control character" if error.character < 0x100 else "not a printable character"
        return f" (line {line}, column {column}): character U+{error.character:04X} is not allowed ({kind})"
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        what = "; ".join(part for part in (error.context, error.problem) if part)
        return f"{where}: {what}"
    return f": {' '.join(str(error).split())}"


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML document.

    Attributes:
        data: what ``yaml.safe_load`` returns.
        lines: the 1-based line of every dotted key (``{"optim.lr": 3}``; list items as ``key[0]``).
        texts: the text as written of every unquoted scalar that YAML reads as no string (``name: off`` ->
            ``{"name": "off"}`` while ``data["name"]`` is ``False``), by dotted key: what a text key takes.
    """

    data: Any
    lines: dict[str, int] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ScalarTexts:
    """The written text of unquoted scalars that YAML reads as no string (:attr:`YamlDocument.texts`), for the
    keys that take text: ``name: off`` is the run name ``'off'``, not ``False``.

    Attributes:
        texts: ``{dotted key: text}``.
        source: the YAML file: taking a text that differs from what YAML read logs a warning naming
            ``<source>:<line>`` and the key; ``None`` (an override, which is text as given): no warning.
        lines: the line of each dotted key in ``source``.
    """

    texts: Mapping[str, str] = field(default_factory=dict)
    source: str | None = None
    lines: Mapping[str, int] = field(default_factory=dict)

    def text(self, key: str, value: Any) -> str | None:
        """The written text of ``key`` (whose value YAML read as ``value``), or ``None`` when there is none."""
        text = self.texts.get(key)
        if text is not None and self.source is not None and text != str(value):
            line = self.lines.get(key)
            where = f"{self.source}:{line}" if line is not None else self.source
            shown = f"unquoted {text!r}" if text else "empty value"
            logger.warning("%s: %s: the %s is read as text, not as %r (quote it to say so)", where, key, shown, value)
        return text


def _walk(document: YamlDocument, loader: UniqueKeyLoader, node: yaml.Node, prefix: str) -> None:
    """Record the lines, the mapping paths (for the loader's messages) and the plain texts under ``node``."""
    if isinstance(node, yaml.MappingNode):
        loader.paths[id(node)] = prefix
        merged = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.append(value_node)  # after the mapping's own keys, which override the merged ones
                continue
            key = f"{prefix}{key_node.value}"
            document.lines.setdefault(key, key_node.start_mark.line + 1)
            _walk(document, loader, value_node, f"{key}.")
        for value_node in merged:
            _walk(document, loader, value_node, prefix)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            key = f"{prefix.removesuffix('.')}[{index}]"
            document.lines.setdefault(key, item.start_mark.line + 1)
            _walk(document, loader, item, f"{key}.")
    elif isinstance(node, yaml.ScalarNode) and node.style is None and node.tag != _STR_TAG:
        document.texts.setdefault(prefix.removesuffix("."), node.value)


def parse_yaml(text: str, source: str = "<string>", *, prefix: str = "") -> YamlDocument:
    """Parse a YAML document like ``yaml.safe_load`` (within the limits of a config), refusing duplicate keys; also
    the line of every dotted key and the written text of unquoted non-string scalars (:class:`YamlDocument`).
    ``prefix`` is put before the keys of the document (the key of an override value); the lines are left out of
    the messages of a one-line text.

    Raises:
        InvalidYamlError: ``<source>: invalid YAML (line L, column C): ...`` (also for nesting deeper than
            :data:`MAX_NESTING` and aliases beyond :data:`MAX_ALIAS_VALUES`).
        DuplicateKeyError: ``<source>:3 and <source>:7: key 'optim.lr' is given twice``.
    """
    loader: UniqueKeyLoader | None = None
    try:
        loader = UniqueKeyLoader(text)  # the reader checks the characters here
        loader.source = source
        loader.line_numbers = "\n" in text.strip()
        loader.paths = {}
        root = loader.get_single_node()
        if root is None:
            return YamlDocument(None)
        document = YamlDocument(None)
        _walk(document, loader, root, prefix)
        return YamlDocument(loader.construct_document(root), document.lines, document.texts)
    except yaml.YAMLError as error:
        raise InvalidYamlError(source, _describe_yaml_error(error, text)) from None
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml(text: str, source: str = "<string>", *, prefix: str = "") -> tuple[Any, dict[str, int]]:
    """The data and the key lines of :func:`parse_yaml` (``(data, {"optim.lr": 3})``).

    Raises:
        ConfigError: invalid YAML or a key given twice (see :func:`parse_yaml`); one line.
    """
    document = parse_yaml(text, source, prefix=prefix)
    return document.data, document.lines


_FILE_KINDS = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a named pipe", stat.S_ISSOCK: "a socket",
               stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device"}


def read_config_text(path: str | os.PathLike[str]) -> str:
    """The text of the config file ``path``: UTF-8 (a leading byte order mark is dropped). Only a regular file is
    opened (a named pipe would block), and one of at most :data:`MAX_CONFIG_BYTES`.

    Raises:
        ConfigError: ``config file not found: <path>``, ``<path> is not a regular file (a named pipe)``, too large,
            unreadable, or ``<path>: not UTF-8 text: byte 0xff at offset 6 (line 1, column 7)``.
    """
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file: {error.strerror or error}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _FILE_KINDS.items() if test(info.st_mode)), "not a file")
        raise ConfigError(f"{path} is not a regular file ({kind}); give a YAML file")
    if info.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {info.st_size} bytes is too large for a config file (at most "
                          f"{MAX_CONFIG_BYTES // (1024 * 1024)} MiB)")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file: {error.strerror or error}") from None
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as error:
        offset = start + error.start
        line, column = data.count(b"\n", 0, offset) + 1, offset - (data.rfind(b"\n", 0, offset) + 1) + 1
        utf16 = data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
        hint = "it looks like UTF-16: save it as UTF-8" if utf16 else "save it as UTF-8"
        raise ConfigError(f"{path}: not UTF-8 text: byte 0x{data[offset]:02x} at offset {offset} (line {line}, "
                          f"column {column}); {hint}") from None
