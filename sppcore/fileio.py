"""Atomic file writes, stable hashing and keyed outputs for caches and results (no torch).

Every cache and result file is written to a temporary file in the same directory and
renamed into place, so an interrupted run never leaves a half-written file behind, and two
processes writing the same entry never corrupt it (the last rename wins, whole).

Every output that is reused later goes through one of two mechanisms here:

* :class:`KeyedEntries`, a directory of per-item ``.npz`` entries (proposals, conv5 maps,
  test detections). The directory is named by, or holds, the key of the settings and
  network the entries were computed with; each entry also stores the digest of its own
  inputs (the image file's content). An entry is served only when both match; a stale one
  is recomputed, and a corrupt or truncated one counts as missing: it is deleted with a
  warning naming the file and recomputed. Entries are keyed per item, so an image set's
  subsets and supersets share them.
* :func:`seal_directory` / :func:`read_seal`: a directory of several files that form one
  result (a model, a pretrained network) is *sealed* by a ``manifest.json`` written last:
  the key of what it was made from and the SHA-256 of every file. A directory without a
  valid seal (being written, interrupted, or edited by hand) is never reused.

Inputs are identified by content (:func:`file_digest`, SHA-256 of the bytes, memoised by
path, size and modification time within a process): touching or copying a file keeps its
entries, editing it invalidates them.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from typing import Any, Iterable, Iterator

import numpy as np

__all__ = [
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_npz",
    "load_npz",
    "stable_hash",
    "file_digest",
    "load_npz_or_none",
    "KeyedEntries",
    "keyed_directory",
    "check_entry_name",
    "seal_directory",
    "read_seal",
    "unseal_directory",
    "atomic_copy",
    "SEAL_FILE",
]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[io.IOBase]:
    """Open a temporary file beside ``path``; rename it onto ``path`` on success only."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_copy(source, target) -> None:
    """Copy a file's content to ``target`` atomically (a partial copy never has its name)."""
    with open(source, "rb") as src, atomic_open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_write_json(path, obj: Any, indent: int = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, default=_json_default) + "\n")


def atomic_save_npz(path, compressed: bool = False, **arrays: np.ndarray) -> None:
    """``np.savez`` written atomically (no pickle: object arrays are refused)."""
    for name, arr in arrays.items():
        if np.asarray(arr).dtype == object:
            raise TypeError(f"refusing to store object array {name!r} (would need pickle)")
    # streamed into the temporary file: no second copy of large arrays in memory
    with atomic_open(path, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)


def load_npz(path) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` file into memory (``allow_pickle=False``)."""
    with np.load(os.fspath(path), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of a JSON-serialisable object, independent of dict order."""
    text = json.dumps(obj, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


# ------------------------------------------------------------------------ keyed outputs

_DIGESTS: dict[tuple, str] = {}
# what a truncated or corrupt .npz raises on reading (zip, npy header, zlib, short reads)
_CORRUPT = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zipfile.LargeZipFile)


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's content, memoised by (path, size, mtime, inode)."""
    path = os.path.abspath(os.fspath(path))
    st = os.stat(path)
    memo = (path, st.st_size, st.st_mtime_ns, st.st_ino)
    digest = _DIGESTS.get(memo)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest = _DIGESTS[memo] = h.hexdigest()
    return digest


def load_npz_or_none(path: str | os.PathLike, what: str = "cache file") -> dict[str, np.ndarray] | None:
    """The arrays of ``path``; None when it is missing, and when it is corrupt or truncated
    (then it is deleted, with a warning naming it, so that it is recomputed)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        return None
    try:
        return load_npz(path)
    except _CORRUPT as e:
        log.warning("%s: corrupt %s (%s: %s); recomputing it", path, what, type(e).__name__, e)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return None


_PLAIN_NAME = re.compile(r"^[^/\\\x00]+$")


def check_entry_name(name: str) -> str:
    """``name`` if it is a plain file name (no separator, not ``.``/``..``), else ValueError:
    an entry must never be written outside its directory."""
    if not isinstance(name, str) or not _PLAIN_NAME.match(name) or name in (".", "..") or os.path.isabs(name):
        raise ValueError(f"{name!r} is not a plain name (no path separators, not '.' or '..')")
    return name


def keyed_directory(root: str, prefix: str, key: Any, describe: Any = None) -> str:
    """``<root>/<prefix>-<hash of key>``, created with a ``manifest.json`` describing the key
    (``describe``, default the key itself) for people; another key is another directory."""
    directory = os.path.join(root, f"{prefix}-{stable_hash(key)}")
    manifest = os.path.join(directory, "manifest.json")
    if not os.path.isfile(manifest):
        os.makedirs(directory, exist_ok=True)
        atomic_write_json(manifest, {"key": key if describe is None else describe})
    return directory


class KeyedEntries:
    """Per-item ``.npz`` entries in ``directory``, each valid for ``key`` (the settings and
    network it was computed with) and its own inputs (see the module docstring).

    ``load(name, inputs)`` returns the entry's arrays, or None when it is missing, was
    computed for another key or other inputs, or is corrupt (deleted with a warning);
    ``save(name, inputs, **arrays)`` writes it atomically."""

    _KEY = "entry_key"

    def __init__(self, directory: str, key: Any = "", what: str = "cache entry"):
        self.directory = directory
        self.key = stable_hash(key)
        self.what = what
        os.makedirs(directory, exist_ok=True)

    def path(self, name: str) -> str:
        return os.path.join(self.directory, check_entry_name(name) + ".npz")

    def _entry_key(self, inputs: Any) -> np.ndarray:
        return np.array(stable_hash([self.key, inputs]))

    def load(self, name: str, inputs: Any = "") -> dict[str, np.ndarray] | None:
        arrays = load_npz_or_none(self.path(name), self.what)
        if arrays is None:
            return None
        stored = arrays.pop(self._KEY, None)
        if stored is None or str(stored) != str(self._entry_key(inputs)):
            return None
        return arrays

    def save(self, name: str, inputs: Any = "", **arrays: np.ndarray) -> None:
        atomic_save_npz(self.path(name), **arrays, **{self._KEY: self._entry_key(inputs)})


SEAL_FILE = "manifest.json"


def unseal_directory(directory: str) -> None:
    """Remove a directory's seal before its files are rewritten (so an interrupted rewrite
    leaves a directory that is never reused)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(directory, SEAL_FILE))


def seal_directory(directory: str, files: Iterable[str], key: Any, **extra: Any) -> str:
    """Write ``directory/manifest.json`` last: ``key``, the SHA-256 of each of ``files``
    (names relative to ``directory``) and their combined digest, which is returned and
    identifies the directory's content."""
    hashes = {name: file_digest(os.path.join(directory, name)) for name in sorted(files)}
    digest = stable_hash({"files": hashes})
    atomic_write_json(os.path.join(directory, SEAL_FILE),
                      {"key": stable_hash(key), "digest": digest, "files": hashes, **extra})
    return digest


def read_seal(directory: str) -> tuple[dict | None, str]:
    """``(manifest, "")`` when ``directory`` is sealed and every file still has its sealed
    content; ``(None, reason)`` otherwise."""
    path = os.path.join(directory, SEAL_FILE)
    if not os.path.isfile(path):
        return None, f"{directory}: incomplete (no {SEAL_FILE}: still being written, or interrupted)"
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
        files = dict(manifest["files"])
        str(manifest["digest"]), str(manifest["key"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        return None, f"{path}: unreadable ({type(e).__name__}: {e})"
    for name, digest in files.items():
        full = os.path.join(directory, name)
        if not os.path.isfile(full):
            return None, f"{full}: missing (listed in {SEAL_FILE})"
        if file_digest(full) != digest:
            return None, f"{full}: changed since the directory was sealed (truncated, edited or half-written)"
    return manifest, ""
