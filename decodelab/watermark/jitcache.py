"""Where numba keeps the compiled watermark kernels (`cache=True`), so runs after the first load them.

numba writes next to the source (`__pycache__`) or, when the package directory is not writable (a
system-wide install), in the user's cache directory; when neither is writable it refuses to
decorate the function at import time. Importing this module before the kernels are defined picks a
writable directory in that last case (`$TMPDIR/decodelab-numba-<uid>`); an explicit NUMBA_CACHE_DIR
always wins.

Example:
    >>> choose_cache_dir(["/ro/pkg/__pycache__", "/tmp/c"], lambda p: p.startswith("/tmp"))
    '/tmp/c'
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

from numba import config as numba_config
from numba.misc.appdirs import AppDirs


def writable(path: str) -> bool:
    """True if `path` exists or can be made, and a file can be written in it."""
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


def choose_cache_dir(candidates: list[str], is_writable: Callable[[str], bool] = writable) -> str | None:
    """The first writable candidate, or None."""
    return next((path for path in candidates if is_writable(path)), None)


def ensure_cache_dir() -> str:
    """The directory numba will cache the kernels in (set as numba's CACHE_DIR only when needed)."""
    if numba_config.CACHE_DIR:
        return numba_config.CACHE_DIR
    in_tree = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")
    user = AppDirs(appname="numba", appauthor=False).user_cache_dir
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    fallback = os.path.join(tempfile.gettempdir(), f"decodelab-numba-{uid}")
    chosen = choose_cache_dir([in_tree, user, fallback], writable)
    if chosen == fallback:
        numba_config.CACHE_DIR = fallback  # numba's own locators would find no writable place
    return chosen or in_tree


CACHE_DIR = ensure_cache_dir()
