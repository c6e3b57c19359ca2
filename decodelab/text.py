"""Text at the boundary: every string a user hands us is checked here, once.

Python `str` can hold lone surrogates (from `"\\ud800"`, from JSON escapes, and from command-line
bytes that are not UTF-8, which Python decodes with `surrogateescape`). Tokenizers and grammar
compilers fail on them with untyped errors, so every entry point (prompts, chat messages, text
options, files, stdin) checks text with these helpers and raises a typed error that names the
offending item.

Example:
    >>> check_text("héllo", "prompt")
    'héllo'
    >>> check_text("a\\udcff", "prompt")
    Traceback (most recent call last):
    ...
    decodelab.errors.InvalidPrompt: prompt is not valid Unicode text (a lone surrogate at character 1; \
non-UTF-8 input?)
"""

from __future__ import annotations

import sys
from typing import Any

from .errors import DecodelabError, InvalidOption, InvalidPrompt

MAX_TEXT_FILE_CHARS = 10_000_000  # a file read as text (texts to detect, schemas, grammars)
_MAX_WALK = 100_000  # strings checked inside one nested value (a JSON schema) at most


def first_surrogate(text: str) -> int | None:
    """Index of the first lone surrogate in `text`, or None when it is valid Unicode text."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as exc:
        return exc.start


def check_text(text: str, what: str, error: type[DecodelabError] = InvalidPrompt, *,
               param: str | None = None) -> str:
    """`text` itself when it is valid Unicode (encodable as UTF-8); otherwise a typed error naming
    `what` and the position."""
    position = first_surrogate(text)
    if position is None:
        return text
    message = f"{what} is not valid Unicode text (a lone surrogate at character {position}; non-UTF-8 input?)"
    if error is InvalidOption:
        raise InvalidOption(message, param=param or what, code="invalid_text")
    raise error(message)


def check_nested_text(value: Any, what: str, error: type[DecodelabError] = InvalidOption) -> Any:
    """`value` (strings, lists, mappings, as JSON holds them) with every string and key checked."""
    stack, seen = [value], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > _MAX_WALK:
            raise InvalidOption(f"{what} is too large (more than {_MAX_WALK} values)", param=what, code="too_large")
        if isinstance(item, str):
            check_text(item, what, error, param=what)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return value


MAX_ERROR_CHARS = 600  # an error quoting a huge bad value shows its start and end, not all of it


def one_line(message: str) -> str:
    """An error message as one printable line: control characters and lone surrogates (from the
    bad input it quotes) written as escapes, so printing or JSON-encoding it cannot fail; beyond
    MAX_ERROR_CHARS the middle is cut out (its length stated).

    Example:
        >>> one_line("bad value 'a\\nb\\udcff'")
        "bad value 'a\\\\nb\\\\udcff'"
    """
    text = message.encode("utf-8", "backslashreplace").decode("utf-8")
    if not text.isprintable():
        # control characters (\n, \x0b, \x85, \u2028, ...) as escapes: they would break the line
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if len(text) > MAX_ERROR_CHARS:
        head, tail = MAX_ERROR_CHARS * 2 // 3, MAX_ERROR_CHARS // 4
        text = f"{text[:head]} ... [{len(text) - head - tail} characters cut] ... {text[-tail:]}"
    return text


def print_error(error: BaseException | str) -> None:
    """`error: <one line>` on stderr: how every command reports bad input."""
    print(f"error: {one_line(str(error))}", file=sys.stderr)


def decode_bytes(data: bytes, what: str, error: type[DecodelabError] = InvalidOption) -> str:
    """UTF-8 bytes as text; anything else is a typed error that says where decoding failed."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not UTF-8 text (byte {exc.start}: 0x{data[exc.start]:02x}); "
                    "is it a binary file?") from None


def read_text_file(path: str, what: str, *, max_chars: int = MAX_TEXT_FILE_CHARS,
                   error: type[DecodelabError] = InvalidOption) -> str:
    """The UTF-8 text of a file ('-' reads stdin); a missing, unreadable, binary or oversized file is
    a typed error naming `what` and the path, never a traceback."""
    label = "standard input" if path == "-" else path
    try:
        if path == "-":
            data = sys.stdin.buffer.read(max_chars * 4 + 1)
        else:
            with open(path, "rb") as handle:
                data = handle.read(max_chars * 4 + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise error(f"{what}: cannot read {label[:200]}: {getattr(exc, 'strerror', None) or exc}") from None
    text = decode_bytes(data, f"{what}: {label}", error)
    if len(text) > max_chars:
        raise error(f"{what}: {label} is longer than {max_chars} characters")
    return text
