"""The bounded reader of space files: ``yaml.safe_load`` that a hostile or broken file cannot stall.

A space file (and a ``--set`` value) is read as :func:`yaml.safe_load` reads it, with guards against:

- size: a file over :data:`MAX_SPACE_BYTES` is refused unread (PyYAML's safe reader is pure Python);
- non-UTF-8 bytes and characters YAML does not allow, named by offset;
- depth: lists and mappings nested deeper than :data:`MAX_DEPTH`, refused while composing;
- alias expansion: a document whose aliases expand beyond :data:`MAX_EXPANDED` nodes and characters or
  :data:`MAX_DEPTH` levels (a "billion laughs"), or refer to a node holding them, refused before any
  value is built;
- duplicate keys, which PyYAML would resolve silently to the last one;
- tags: only the standard ones, as ``yaml.SafeLoader`` (``!!python/...`` is refused).

Each refusal is one :class:`~fairsearch.errors.FairsearchError` naming the file, line and column. What
the values mean is :mod:`fairsearch.spec.space`'s business.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from fairsearch.errors import FairsearchError, clip_text, short_repr

__all__ = ["MAX_DEPTH", "MAX_EXPANDED", "MAX_SPACE_BYTES", "read_yaml", "read_yaml_file"]

MAX_SPACE_BYTES = 1 << 16
"""The largest space file read (64 KiB): a real one is a few hundred bytes, and PyYAML's pure-Python
reader, the safe one, takes seconds per hundred KiB."""
MAX_DEPTH = 32
"""The deepest nesting of lists and mappings a space file may have, aliases expanded."""
MAX_EXPANDED = 1 << 20
"""The most nodes plus scalar characters a space file may hold once its aliases are expanded: far
more than a file without aliases under :data:`MAX_SPACE_BYTES` can hold, far less than an alias bomb."""


def read_yaml_file(path: Path) -> Any:
    """A space file's document, read within the bounds of :func:`read_yaml` and at most
    :data:`MAX_SPACE_BYTES` of UTF-8 text.

    Raises:
        FairsearchError: the file is missing, too large, not text or not YAML, or beyond a bound.
    """
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SPACE_BYTES + 1)
    except OSError as err:
        raise FairsearchError(f"{path}: cannot read the space file ({err.strerror or err})") from None
    if len(data) > MAX_SPACE_BYTES:
        raise FairsearchError(
            f"{path}: larger than {MAX_SPACE_BYTES >> 10} KiB, so not a space file; a space file is a short "
            "YAML file of keys and values (see search_spaces/)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FairsearchError(
            f"{path}: not a text file (byte 0x{data[err.start]:02x} at offset {err.start} is not UTF-8); "
            "a space file is YAML text"
        ) from None
    return read_yaml(text, path)


def read_yaml(text: str, source: Path | str) -> Any:
    """``yaml.safe_load(text)`` within this module's bounds: nesting, alias expansion, duplicate keys.

    Raises:
        FairsearchError: not YAML, or beyond a bound; the message names ``source``, line and column.
    """
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # a yaml.SafeLoader subclass: safe_load, bounded
    except _Refused as err:
        where = f" at line {err.mark.line + 1}, column {err.mark.column + 1}" if err.mark else ""
        raise FairsearchError(f"{source}: refused{where}: {err.problem}") from None
    except yaml.reader.ReaderError as err:
        raise FairsearchError(
            f"{source}: not valid YAML: character {short_repr(chr(err.character))} at offset {err.position} "
            "is not allowed in YAML text"
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise FairsearchError(f"{source}: not valid YAML{where}: {clip_text(problem)}") from None


class _Refused(yaml.YAMLError):
    """A YAML document beyond a bound of :func:`read_yaml`."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem = problem
        self.mark = mark


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader that refuses deep nesting while composing, and, before constructing
    any value, a document whose aliases expand beyond :data:`MAX_EXPANDED` or :data:`MAX_DEPTH`, or
    refer to a node that holds them."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(
                    f"lists and mappings nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: yaml.Node) -> Any:
        _check_expansion(node)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[tuple[str, str], yaml.Node] = {}
        for key, _ in node.value:  # YAML keys are unique; PyYAML would keep the last one silently
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                first = seen.setdefault((key.tag, key.value), key)
                if first is not key:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {short_repr(key.value)} (first at line {first.start_mark.line + 1})",
                        key.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        yield from node.value
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield key
            yield value


def _check_expansion(root: yaml.Node) -> None:
    """Refuses a node graph that, with its aliases expanded, is larger than :data:`MAX_EXPANDED` nodes
    and characters, deeper than :data:`MAX_DEPTH`, or infinite (an alias inside its own anchor).
    Linear in the graph, not in its expansion: each node's expanded size and depth is computed once."""
    sizes: dict[int, tuple[int, int]] = {}
    path: set[int] = set()  # the nodes being expanded: an alias to one of them is recursive
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if not children_done:
            if id(node) in sizes:
                continue
            if id(node) in path:
                raise _Refused(
                    "an alias refers to a node that contains it (a recursive alias)", node.start_mark
                )
            path.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
            continue
        path.discard(id(node))
        below = [sizes[id(child)] for child in _children(node)]
        size = 1 + sum(s for s, _ in below) + (len(node.value) if isinstance(node, yaml.ScalarNode) else 0)
        depth = 1 + max((d for _, d in below), default=0)
        if size > MAX_EXPANDED:
            raise _Refused(
                f"its aliases expand to more than {MAX_EXPANDED} nodes and characters (an alias bomb?); "
                "write the values out instead",
                node.start_mark,
            )
        if depth > MAX_DEPTH:
            raise _Refused(
                f"its aliases expand to lists and mappings nested deeper than {MAX_DEPTH} levels",
                node.start_mark,
            )
        sizes[id(node)] = (size, depth)
