"""Keyed entries, sealed directories and content digests (sppcore/fileio.py)."""
import os

import numpy as np
import pytest

from sppcore.fileio import (KeyedEntries, check_entry_name, file_digest, keyed_directory, load_npz_or_none,
                           read_seal, seal_directory, unseal_directory)


def test_entries_are_served_only_for_their_key_and_inputs(tmp_path):
    entries = KeyedEntries(str(tmp_path), key={"scales": [480]})
    entries.save("img", "digest-a", boxes=np.arange(8, dtype=np.float32).reshape(2, 4))
    got = entries.load("img", "digest-a")
    assert set(got) == {"boxes"}
    np.testing.assert_array_equal(got["boxes"], np.arange(8).reshape(2, 4))
    assert entries.load("img", "digest-b") is None  # the image changed
    assert KeyedEntries(str(tmp_path), key={"scales": [600]}).load("img", "digest-a") is None  # settings changed
    assert entries.load("other", "digest-a") is None  # never computed


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.9])
def test_a_truncated_entry_counts_as_missing_and_is_deleted_with_a_warning(tmp_path, caplog, keep):
    entries = KeyedEntries(str(tmp_path), key="k")
    entries.save("img", "d", x=np.random.default_rng(0).normal(size=(50, 50)))
    path = entries.path("img")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])
    caplog.set_level("WARNING")
    assert entries.load("img", "d") is None
    assert f"{path}: corrupt" in caplog.text
    assert not os.path.exists(path)


def test_load_npz_or_none(tmp_path):
    assert load_npz_or_none(tmp_path / "missing.npz") is None
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"")
    assert load_npz_or_none(bad) is None and not bad.exists()


@pytest.mark.parametrize("name", ["../x", "/abs/x", "a/b", "a\\b", "..", ".", ""])
def test_entry_names_never_leave_their_directory(tmp_path, name):
    with pytest.raises(ValueError, match="not a plain name"):
        check_entry_name(name)
    with pytest.raises(ValueError):
        KeyedEntries(str(tmp_path)).path(name)


def test_keyed_directory_follows_the_key(tmp_path):
    a = keyed_directory(str(tmp_path), "conv5", {"w": 1})
    assert a == keyed_directory(str(tmp_path), "conv5", {"w": 1})
    assert a != keyed_directory(str(tmp_path), "conv5", {"w": 2})
    assert os.path.isfile(os.path.join(a, "manifest.json"))


def test_file_digest_follows_content_not_time(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    d = file_digest(p)
    os.utime(p, ns=(10**9, 10**9))
    assert file_digest(p) == d
    p.write_bytes(b"abd")  # an edit: same size, new content
    assert file_digest(p) != d
    copy = tmp_path / "copy.bin"
    copy.write_bytes(b"abc")
    assert file_digest(copy) == d  # a copy (other path, other time) has the same digest


def test_seal_detects_missing_edited_and_unsealed_files(tmp_path):
    d = str(tmp_path)
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text(name)
    digest = seal_directory(d, ["a.txt", "b.txt"], key={"k": 1})
    manifest, reason = read_seal(d)
    assert manifest["digest"] == digest and reason == ""
    (tmp_path / "b.txt").write_text("edited")
    manifest, reason = read_seal(d)
    assert manifest is None and "b.txt: changed" in reason
    (tmp_path / "b.txt").write_text("b.txt")
    assert read_seal(d)[0]["digest"] == digest  # the same content, the same digest
    os.remove(tmp_path / "a.txt")
    assert "a.txt: missing" in read_seal(d)[1]
    (tmp_path / "a.txt").write_text("a.txt")
    unseal_directory(d)
    assert "incomplete" in read_seal(d)[1]
    (tmp_path / "manifest.json").write_text("{not json")
    assert "unreadable" in read_seal(d)[1]


def test_atomic_copy_copies_and_never_leaves_a_partial_target(tmp_path, monkeypatch):
    from sppcore.fileio import atomic_copy

    source = tmp_path / "source.bin"
    source.write_bytes(bytes(range(256)) * 5000)
    atomic_copy(source, tmp_path / "out" / "copy.bin")
    assert (tmp_path / "out" / "copy.bin").read_bytes() == source.read_bytes()

    import shutil

    def failing(src, dst, length=0):
        dst.write(src.read(1000))
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copyfileobj", failing)
    with pytest.raises(OSError, match="disk full"):
        atomic_copy(source, tmp_path / "other.bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "source.bin"]
