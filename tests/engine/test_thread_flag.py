"""ThreadFlag: on inside its block, for this thread only, restored after nesting and errors."""

from __future__ import annotations

import threading

import pytest

from decodelab.engine.thread_flag import ThreadFlag


def test_flag_is_on_in_its_block_only_and_nesting_restores():
    flag = ThreadFlag()
    assert not flag
    with flag.on():
        with flag.on():
            assert flag
        assert flag
    assert not flag
    with pytest.raises(ValueError), flag.on():
        raise ValueError("inside")
    assert not flag


def test_other_threads_do_not_see_it():
    flag, seen = ThreadFlag(), []
    with flag.on():
        thread = threading.Thread(target=lambda: seen.append(bool(flag)))
        thread.start()
        thread.join()
    assert seen == [False]
