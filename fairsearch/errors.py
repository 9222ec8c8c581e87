"""The one exception type for problems the user can fix (bad input, missing files), and how its messages
quote a value the user wrote."""

import reprlib
from typing import Any

__all__ = ["FairsearchError", "clip_text", "clip_value", "printable", "short_repr"]


class FairsearchError(Exception):
    """A user-facing problem: bad input, a missing file, a malformed space.

    The message is one line (or one line per problem) that names the file or key, the value found and
    what is allowed. The CLI prints it without a traceback and exits with status 2.
    """


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, 60, 60, 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to at most ``limit`` characters, computed without building a longer one."""
    return clip_text(_REPR.repr(value), limit)


def clip_text(text: str, limit: int = 80) -> str:
    """``text`` cut to at most ``limit`` characters, the last one ``…`` where it was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def printable(text: str, keep: str = "") -> str:
    """``text`` with every character a terminal could act on written as its Python escape (``\\x1b``,
    ``\\u202e``): the C0 and C1 controls (ESC, BEL, CR, ...), DEL, the bidirectional overrides and
    isolates and the other invisible format characters, line and paragraph separators and lone
    surrogates; any character ``str.isprintable`` refuses but a plain space. ``keep`` lists characters
    left as they are (``"\\n"`` for a message of several lines).

    A message quoting it can then neither set the terminal's title, move its cursor or clear its screen
    nor show its text in another order than it was written.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else repr(c)[1:-1] for c in text)


def clip_value(value: Any, limit: int = 120) -> str:
    """A value the user wrote, for a message: a string as it is, anything else as its ``repr``; control
    and format characters escaped (:func:`printable`), cut to at most ``limit`` characters."""
    return clip_text(printable(value), limit) if isinstance(value, str) else short_repr(value, limit)
