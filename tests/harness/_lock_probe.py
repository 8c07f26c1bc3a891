"""A spawned process's probe of a build lock (imports nothing heavy: spawning it is cheap)."""

import fcntl


def try_lock(path: str, queue) -> None:
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            queue.put("held")
        else:
            queue.put("free")
