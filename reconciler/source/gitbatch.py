"""One long-lived ``git cat-file --batch-command`` per cache: small reads without a process each.

A cycle after a one-file push reads a handful of objects: does the commit exist, how big
are the two or three changed blobs, what do they hold.  Each of those as its own ``git``
process costs 2–4 ms of fork and start-up, more than the reading itself, and the load of
a new commit made five of them.  This reader keeps one ``cat-file --batch-command``
running beside the cache (GitPython keeps its ``cat-file`` processes the same way) and
asks it over its pipes.

It is only ever a fast path.  Every answer that is not a plain "here it is" — an object
reported missing, a reply that does not parse, a process that died or cannot start —
makes the caller fall back to its one-shot command, whose errors (the cache is damaged,
the commit is unknown) are the ones the rest of :mod:`reconciler.source.gitsource` already
handles.  So the reader never decides that something is wrong; it can only say "found".

Reads are serialised by a lock (the dashboard reads while a cycle runs).  Batches are
kept small (:data:`MAX_BATCH`) so that a reply never outgrows the pipe while the request
is still being written; contents are asked one object at a time for the same reason.
``git cat-file`` re-scans the pack directory when an object is not found, so objects
fetched after the process started are seen; the process is restarted when the cache is
reopened or rebuilt (:meth:`close`).

At most :data:`MAX_LIVE` readers keep a process at a time (a process has its own one
cache; a test suite makes thousands of them): starting one more stops the one used least
recently, unless it is reading right then.  A stopped reader starts again when asked.
"""

from __future__ import annotations

import os
import subprocess
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path

from reconciler.source import gitcmd

MAX_BATCH = 256  # ids per info round: ~60-byte replies stay far below a 64 KiB pipe buffer
MAX_LIVE = 8  # readers holding a process (and its two pipes) at once, in this process

_live: OrderedDict[int, weakref.ref[BatchReader]] = OrderedDict()  # least recently used first
_live_lock = threading.Lock()


def _used(reader: BatchReader) -> None:
    """``reader`` (whose lock its caller holds) is the most recently used; over the bound, the
    least recently used others stop their processes — each only if it is idle right now."""
    victims: list[BatchReader] = []
    with _live_lock:
        _live[id(reader)] = weakref.ref(reader)
        _live.move_to_end(id(reader))
        while len(_live) > MAX_LIVE:
            victim = _live.popitem(last=False)[1]()
            if victim is not None and victim is not reader:
                victims.append(victim)
    for victim in victims:
        if victim._lock.acquire(blocking=False):  # never waits: a busy reader is left alone
            try:
                victim._stop()
            finally:
                victim._lock.release()


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for stream in (proc.stdin, proc.stdout):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass


def live_readers() -> int:
    """How many readers hold a process now."""
    with _live_lock:
        return sum(1 for ref in _live.values() if (r := ref()) is not None and r._proc is not None)


class BatchReader:
    """``info`` and ``contents`` of objects in one repository, through one process."""

    def __init__(self, cwd: Path, env: Mapping[str, str]):
        self.cwd = cwd
        self.env = {**os.environ, **env}
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self.started = 0  # processes started (a restart after a failure counts again)

    def _process(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._stop()
            self._proc = gitcmd.spawn(["cat-file", "--batch-command", "--buffer"], cwd=self.cwd, env=self.env,
                                      stderr=subprocess.DEVNULL)
            self.started += 1
            # a reader dropped without close() still ends its process: subprocess keeps a
            # running child's Popen (and so its pipes) alive after it is dropped, and
            # cat-file only exits when its input closes
            weakref.finalize(self, _close_pipes, self._proc)
        _used(self)
        return self._proc

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with _live_lock:
            _live.pop(id(self), None)
        _close_pipes(proc)
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        with self._lock:
            self._stop()

    def info(self, names: Iterable[str]) -> dict[str, tuple[str, str, int]] | None:
        """name → (object id, type, size) for every name, or None when any of them is not
        plainly found (missing, ambiguous, a reply that does not parse, a dead process)."""
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return {}
        if any(not n or any(c in n for c in "\n\0 ") for n in wanted):
            return None
        found: dict[str, tuple[str, str, int]] = {}
        with self._lock:
            try:
                for start in range(0, len(wanted), MAX_BATCH):
                    chunk = wanted[start:start + MAX_BATCH]
                    proc = self._process()
                    assert proc.stdin is not None and proc.stdout is not None
                    proc.stdin.write("".join(f"info {n}\n" for n in chunk).encode() + b"flush\n")
                    proc.stdin.flush()
                    for index, name in enumerate(chunk):
                        parts = proc.stdout.readline().split()
                        if len(parts) != 3 or not parts[2].isdigit():
                            if parts:  # "<name> missing" (or ambiguous): one line; the rest are owed
                                self._drain(proc, len(chunk) - 1 - index)
                            else:
                                self._stop()
                            return None
                        found[name] = (parts[0].decode(), parts[1].decode(), int(parts[2]))
            except (OSError, ValueError):
                self._stop()
                return None
        return found

    def contents(self, ids: Iterable[str], kind: str = "blob") -> dict[str, bytes] | None:
        """object id → its contents, each of type ``kind``; None unless every one is found."""
        out: dict[str, bytes] = {}
        with self._lock:
            try:
                for oid in dict.fromkeys(ids):
                    if not oid or any(c in oid for c in "\n\0 "):
                        return None
                    proc = self._process()
                    assert proc.stdin is not None and proc.stdout is not None
                    proc.stdin.write(f"contents {oid}\nflush\n".encode())
                    proc.stdin.flush()
                    parts = proc.stdout.readline().split()
                    if len(parts) != 3 or parts[1].decode() != kind or not parts[2].isdigit():
                        if len(parts) == 3 and parts[2].isdigit():  # found, but another type: skip its body
                            proc.stdout.read(int(parts[2]) + 1)
                        elif not parts:
                            self._stop()
                        return None
                    size = int(parts[2])
                    data = proc.stdout.read(size + 1)
                    if len(data) != size + 1 or data[-1:] != b"\n":
                        self._stop()
                        return None
                    out[oid] = data[:-1]
            except (OSError, ValueError):
                self._stop()
                return None
        return out

    def _drain(self, proc: subprocess.Popen[bytes], lines: int) -> None:
        """Read the replies still owed for the rest of a chunk (each is one line: only
        ``info`` was asked), so the next request starts on a clean reply stream."""
        assert proc.stdout is not None
        for _ in range(lines):
            if not proc.stdout.readline():
                self._stop()
                return
