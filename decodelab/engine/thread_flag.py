"""A boolean switched on for the current thread by a `with` block (server threads do not see it).

Example:
    >>> flag = ThreadFlag()
    >>> with flag.on():
    ...     bool(flag)
    True
    >>> bool(flag)
    False
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class ThreadFlag:
    """False unless the current thread is inside `with flag.on():` (nested blocks restore)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def __bool__(self) -> bool:
        return getattr(self._local, "value", False)

    @contextlib.contextmanager
    def on(self) -> Iterator[None]:
        before = bool(self)
        self._local.value = True
        try:
            yield
        finally:
            self._local.value = before
