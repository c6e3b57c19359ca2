"""Incremental detokenisation without broken UTF-8, and stop-string handling.

A token may end in the middle of a multi-byte character; its text then ends in U+FFFD until
the next token completes it. We decode a short window behind the read offset (as TGI and vLLM
do) and only release text that does not end in U+FFFD. Text that could be the start of a stop
string is held back until it is known not to be one.
"""

from __future__ import annotations

from ..errors import InvalidOption
from ..text import check_text, decode_bytes

MAX_STOP_STRINGS = 8
MAX_STOP_CHARS = 1000


def validate_stop(stop: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Stop strings as a tuple: at most MAX_STOP_STRINGS non-empty texts of at most MAX_STOP_CHARS
    characters each. The server calls this too, so the messages are the same everywhere."""
    if stop is None:
        return ()
    items = [stop] if isinstance(stop, (str, bytes)) else stop
    if not isinstance(items, (list, tuple)):
        raise InvalidOption(f"stop must be a string or a list of strings, got {type(stop).__name__}", param="stop")
    if len(items) > MAX_STOP_STRINGS:
        raise InvalidOption(f"at most {MAX_STOP_STRINGS} stop strings, got {len(items)}", param="stop")
    out = []
    for i, item in enumerate(items):
        where = "stop string" if isinstance(stop, (str, bytes)) else f"stop string {i}"
        if isinstance(item, bytes):
            item = decode_bytes(item, where)
        if not isinstance(item, str):
            raise InvalidOption(f"{where} must be a string, got {type(item).__name__}", param="stop")
        check_text(item, where, InvalidOption, param="stop")
        if not item:
            raise InvalidOption(f"{where} is empty; stop strings must not be empty", param="stop")
        if len(item) > MAX_STOP_CHARS:
            raise InvalidOption(f"{where} is longer than {MAX_STOP_CHARS} characters", param="stop")
        out.append(item)
    return tuple(out)


class IncrementalText:
    """Turns a growing list of token ids into text deltas, stopping at stop strings.

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> inc = IncrementalText(lm.tokenizer, stop=("lo",))
        >>> inc.add(lm.encode("hel", chat=False)), inc.add(lm.encode("lo!", chat=False)), inc.stopped
        ('he', 'l', True)
    """

    def __init__(self, tokenizer, stop: tuple[str, ...] = ()):
        self.tokenizer = tokenizer
        self.stop = stop
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self.text = ""  # all decoded, complete text so far
        self.emitted = 0  # characters of self.text already released
        self.stopped = False

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def add(self, new_ids: list[int]) -> str:
        """Add tokens; return the newly released text (possibly empty)."""
        if self.stopped:
            return ""
        self.ids.extend(int(t) for t in new_ids)
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        full = self._decode(self.ids[self.prefix_offset :])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self.text += full[len(prefix) :]
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
        return self._release()

    def _release(self) -> str:
        end = len(self.text)
        for stop in self.stop:
            found = self.text.find(stop, max(0, self.emitted - len(stop) + 1))
            if found != -1 and found < end:
                end = found
                self.stopped = True
        if self.stopped:
            self.text = self.text[:end]
        else:
            # hold back a suffix that may grow into a stop string
            for stop in self.stop:
                for size in range(min(len(stop) - 1, len(self.text)), 0, -1):
                    if stop.startswith(self.text[-size:]):
                        end = min(end, len(self.text) - size)
                        break
        delta = self.text[self.emitted : end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        return delta

    def flush(self) -> str:
        """Release everything held back (at the end of generation)."""
        if not self.stopped:
            tail = self._decode(self.ids[self.prefix_offset :])
            prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
            if len(tail) > len(prefix):
                self.text += tail[len(prefix) :]
        delta = self.text[self.emitted :]
        self.emitted = len(self.text)
        return delta
