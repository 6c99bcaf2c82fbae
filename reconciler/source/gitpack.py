"""Git's object formats, for the one write that must be fast: a status commit's new tree.

A status commit changes a few files of ``status/``, a flat directory of one file per
execution (SPEC §1): at 10 000 executions a tree of 10 000 entries and 390 KB.  ``git
fast-import`` reads that tree and writes it again for every commit, which is most of its
time.  Here the tree is kept parsed between commits (:class:`TreeEntries`), the changed
entries are put in place, and the new blobs and tree go into a small pack
(:func:`pack_objects`, :func:`write_pack`) that fast-import then names with a single
``M 040000 <tree>`` line: fast-import still writes the commit, the trees above it and the
ref, and still checks that the tree it is given exists and is a tree.

Only the formats are here (Git's documentation: *gitformat-pack*, *gitformat-index*):

* a tree is a sequence of ``<mode> <name>\\0<20-byte id>`` entries, sorted by name where a
  directory's name compares as if it ended in ``/``;
* a pack is ``PACK``, version 2, a count, the objects (a type-and-size header, then the
  zlib stream), and the SHA-1 of everything before; its ``.idx`` (version 2) is a fan-out
  table, the sorted ids, the CRC-32 of each packed object, their offsets, and two SHA-1s.

Objects are stored, not deflated (zlib level 0, a valid stream, as ``core.compression=0``
writes them): deflating 390 KB costs more than everything else here, and the pack lives
only until ``gc --auto`` folds the cache's packs into one, with deltas.  SHA-1 object ids
only: a cache in another object format is never written this way.

Nothing here decides anything. :mod:`reconciler.record.writeback_git` decides when this is
used, and the status commit's check (``diff-tree`` against its parent, before any push)
verifies every commit built this way; one that does not check out is built again the
plain way.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import zlib
from bisect import bisect_left
from pathlib import Path

__all__ = ["TreeEntries", "object_id", "pack_objects", "write_pack"]

_TYPES = {"commit": 1, "tree": 2, "blob": 3}
_DIRECTORY = b"40000"
FILE_MODE = b"100644"


def object_id(kind: str, data: bytes) -> bytes:
    """The (SHA-1, binary) id Git gives ``data`` as an object of ``kind``."""
    return hashlib.sha1(b"%s %d\0" % (kind.encode(), len(data)) + data).digest()


def _sort_key(entry: bytes) -> bytes:
    """An entry's place in a tree: its name, and "/" after it for a directory."""
    space = entry.index(b" ")
    name = entry[space + 1:entry.index(b"\0", space)]
    return name + b"/" if entry[:space] == _DIRECTORY else name


class TreeEntries:
    """The entries of one tree, in Git's order (each as the tree holds its bytes)."""

    __slots__ = ("_entries",)

    def __init__(self, entries: list[bytes]):
        self._entries = entries

    @classmethod
    def parse(cls, raw: bytes) -> TreeEntries:
        """The entries of a tree object's contents; ValueError unless it is one, well formed
        and in order (anything odd is left to fast-import)."""
        entries: list[bytes] = []
        find, end, at, last = raw.find, len(raw), 0, b""
        while at < end:
            space = find(b" ", at)
            nul = find(b"\0", space + 1) if space > at else -1
            stop = nul + 21
            if nul < 0 or stop > end:
                raise ValueError(f"a truncated tree entry at byte {at}")
            mode, name = raw[at:space], raw[space + 1:nul]
            if not mode.isdigit() or not name or b"/" in name:
                raise ValueError(f"a malformed tree entry at byte {at}")
            key = name + b"/" if mode == _DIRECTORY else name
            if entries and key <= last:
                raise ValueError(f"tree entries out of order at byte {at}")
            entries.append(raw[at:stop])
            at, last = stop, key
        return cls(entries)

    def put_file(self, name: bytes, blob: bytes) -> None:
        """``name`` as a regular file holding ``blob`` (a binary id); it replaces any entry of
        that name, a directory included, as fast-import's ``M 100644`` does."""
        if not name or b"/" in name or b"\0" in name or len(blob) != 20:
            raise ValueError(f"not a tree entry: {name!r}")
        entries = self._entries
        entry = FILE_MODE + b" " + name + b"\0" + blob
        at = bisect_left(entries, name, key=_sort_key)
        if at < len(entries) and _sort_key(entries[at]) == name:
            entries[at] = entry
            return
        below = bisect_left(entries, name + b"/", at, key=_sort_key)
        if below < len(entries) and _sort_key(entries[below]) == name + b"/":
            del entries[below]
        entries.insert(at, entry)

    def raw(self) -> bytes:
        """The tree object's contents."""
        return b"".join(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def _header(kind: str, size: int) -> bytes:
    """A packed object's type-and-size header (size in 4 bits, then 7 bits per byte)."""
    out = bytearray()
    byte = (_TYPES[kind] << 4) | (size & 0x0F)
    size >>= 4
    while size:
        out.append(byte | 0x80)
        byte, size = size & 0x7F, size >> 7
    out.append(byte)
    return bytes(out)


def pack_objects(objects: list[tuple[str, bytes]]) -> tuple[str, bytes, bytes]:
    """(name, pack, index) of a version-2 pack holding ``objects`` ((kind, data), none of
    them a delta) and its version-2 index; the name is the pack's checksum, as git names it."""
    pack = bytearray(b"PACK" + struct.pack(">II", 2, len(objects)))
    rows: dict[bytes, tuple[int, int]] = {}  # id → (crc32 of the packed object, its offset)
    for kind, data in objects:
        packed = _header(kind, len(data)) + zlib.compress(data, 0)
        rows.setdefault(object_id(kind, data), (zlib.crc32(packed), len(pack)))
        pack += packed
    if len(rows) != len(objects):
        raise ValueError("the same object twice in one pack")
    checksum = hashlib.sha1(pack).digest()
    pack += checksum
    ids = sorted(rows)
    fanout, count = [], 0
    for first in range(256):
        while count < len(ids) and ids[count][0] == first:
            count += 1
        fanout.append(count)
    index = bytearray(b"\377tOc" + struct.pack(">I", 2))
    index += struct.pack(">256I", *fanout)
    index += b"".join(ids)
    index += b"".join(struct.pack(">I", rows[i][0]) for i in ids)
    index += b"".join(struct.pack(">I", rows[i][1]) for i in ids)  # all below 2 GiB
    index += checksum
    index += hashlib.sha1(index).digest()
    return checksum.hex(), bytes(pack), bytes(index)


def write_pack(pack_dir: Path, name: str, pack: bytes, index: bytes) -> None:
    """Put a pack and its index into a repository's ``objects/pack``: each written aside and
    renamed into place, the index last (git sees a pack once its index is there)."""
    for suffix, data in ((".pack", pack), (".idx", index)):
        handle, temporary = tempfile.mkstemp(prefix="tmp_pack_", dir=pack_dir)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.chmod(temporary, 0o444)
            os.replace(temporary, pack_dir / f"pack-{name}{suffix}")
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
