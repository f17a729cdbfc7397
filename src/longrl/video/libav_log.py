"""Hear what FFmpeg says about damaged input.

Some damage never reaches Python as an exception: Matroska's demuxer logs
"File ended prematurely" for a cut download and then just stops. PyAV
forwards no FFmpeg log at all by default, so `capture_libav_errors` raises
the level to ERROR while any caller is inside (counted, so threads do not undo
each other) and collects this thread's messages. Keep the block short (open
and demux only): while the level is raised, messages from other threads
reach Python's `logging`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_users = 0
_level_before: int | None = None
_skip_repeated_before = True


@contextmanager
def capture_libav_errors() -> Iterator[list[tuple[int, str, str]]]:
    """Yield the live list of (level, source, message) FFmpeg logs from this thread."""
    global _users, _level_before, _skip_repeated_before
    import av.logging

    with _lock:
        if _users == 0:
            _level_before = av.logging.get_level()
            if _level_before is None or _level_before < av.logging.ERROR:
                av.logging.set_level(av.logging.ERROR)
            # PyAV drops a message identical to the previous one ("repeated
            # N times"): the same damage in the next file would go unheard.
            _skip_repeated_before = av.logging.get_skip_repeated()
            av.logging.set_skip_repeated(False)
        _users += 1
    try:
        with av.logging.Capture(local=True) as logs:
            yield logs
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                if _level_before != av.logging.get_level():
                    av.logging.set_level(_level_before)
                av.logging.set_skip_repeated(_skip_repeated_before)


def libav_errors_in(logs: list[tuple[int, str, str]], limit: int = 3) -> str:
    """The first `limit` messages of level ERROR or worse, joined; "" if none."""
    import av.logging

    errors = [
        f"{source}: {message.strip()}"
        for level, source, message in logs
        if level <= av.logging.ERROR
    ]
    return "; ".join(errors[:limit])
