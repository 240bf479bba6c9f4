"""The proposal store's keys: entries per image, shared by subsets and supersets."""
import os

import cv2
import numpy as np

from proposals import ProposalStore
from proposals.config import ProposalConfig


def images(tmp_path, n):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        img = np.full((90, 120, 3), 128, np.uint8)
        x, y = rng.integers(0, 60, 2)
        img[y : y + 30, x : x + 50] = rng.integers(0, 255, 3)
        p = tmp_path / f"{i}.png"
        cv2.imwrite(str(p), img)
        paths.append(str(p))
    return [f"im{i}" for i in range(n)], paths


def test_subsets_and_supersets_share_entries(tmp_path, monkeypatch):
    import proposals.backends as ps

    ids, paths = images(tmp_path, 4)
    cfg = ProposalConfig(max_boxes=50)
    whole = ProposalStore.build(cfg, ids, paths, str(tmp_path / "cache"), workers=1, progress=False)
    calls = []
    real = ps._compute_one
    monkeypatch.setattr(ps, "_compute_one", lambda item: calls.append(item[0]) or real(item))
    part = ProposalStore.build(cfg, ids[:2], paths[:2], str(tmp_path / "cache"), workers=1, progress=False)
    assert calls == [] and part.directory == whole.directory  # --num-images 2 after the whole set
    np.testing.assert_array_equal(part["im1"], whole["im1"])
    (tmp_path / "more").mkdir()
    _, more_paths = images(tmp_path / "more", 5)
    ProposalStore.build(cfg, ids + ["extra"], paths + [more_paths[4]], str(tmp_path / "cache"), workers=1,
                        progress=False)
    assert calls == ["extra"]  # a superset computes only what it adds


class GatedBackend:
    """A computing backend whose images wait for a go each (and one that may fail), to
    see what a store filled in the background gives its reader meanwhile."""

    computes = True

    def __init__(self, ids, fail=None):
        import threading

        self.go = {i: threading.Event() for i in ids}
        self.fail = fail

    def key(self, cfg):
        return {}

    def fill(self, cfg, todo, workers, done):
        import proposals.backends as ps
        from sppcore.errors import ProposalError

        for item in todo:
            self.go[item[0]].wait(10)
            if item[0] == self.fail:
                raise ProposalError(f"{item[1]}: cannot read the image")
            done(ps._compute_one(item))


def test_a_store_filled_in_the_background_gives_each_entry_as_it_is_read(tmp_path, monkeypatch):
    from proposals.backends import BACKENDS

    ids, paths = images(tmp_path, 5)
    cfg = ProposalConfig(max_boxes=50)
    fore = ProposalStore.build(cfg, ids, paths, str(tmp_path / "fore"), workers=1, progress=False)
    # the store returns before any entry exists, and reading an image waits for it only
    gated = GatedBackend(ids)
    monkeypatch.setitem(BACKENDS, cfg.backend, gated)
    back = ProposalStore.build(cfg, ids, paths, str(tmp_path / "back"), workers=1, progress=False, background=True)
    assert back._pending == set(ids)
    gated.go["im0"].set()
    np.testing.assert_array_equal(back["im0"], fore["im0"])
    assert "im4" in back._pending
    for i in ids[1:]:
        gated.go[i].set()
    for i in ids:
        np.testing.assert_array_equal(back[i], fore[i])
        assert back.seconds(i) > 0
    assert back.wait() is back and back.fill_seconds > 0
    # a rebuild finds every entry: nothing runs in the background
    again = ProposalStore.build(cfg, ids, paths, str(tmp_path / "back"), workers=1, progress=False, background=True)
    assert again._thread is None and not again._pending


def test_a_background_fill_hands_its_error_to_the_reader(tmp_path, monkeypatch):
    import pytest

    from proposals.backends import BACKENDS
    from sppcore.errors import ProposalError

    ids, paths = images(tmp_path, 3)
    cfg = ProposalConfig(max_boxes=50)
    gated = GatedBackend(ids, fail="im1")
    for event in gated.go.values():
        event.set()
    monkeypatch.setitem(BACKENDS, cfg.backend, gated)
    store = ProposalStore.build(cfg, ids, paths, str(tmp_path / "cache"), workers=1, progress=False, background=True)
    assert store["im0"].shape[1] == 4
    with pytest.raises(ProposalError, match="1.png: cannot read the image"):
        store["im1"]
    with pytest.raises(ProposalError, match="1.png: cannot read the image"):
        store.wait()
    with pytest.raises(ProposalError, match="1.png"):  # never computed: the fill stopped at im1
        store["im2"]


def test_a_background_fill_computes_in_worker_processes_what_one_process_does(tmp_path):
    # one worker in the background is a process of its own (the selective search's
    # Python loops would otherwise share the reader's interpreter lock); same entries
    ids, paths = images(tmp_path, 3)
    cfg = ProposalConfig(max_boxes=50)
    fore = ProposalStore.build(cfg, ids, paths, str(tmp_path / "fore"), workers=1, progress=False)
    back = ProposalStore.build(cfg, ids, paths, str(tmp_path / "back"), workers=1, progress=False, background=True)
    for i in ids:
        np.testing.assert_array_equal(back[i], fore[i])
    back.wait()


def test_proposals_overlap_fills_the_store_in_the_background_with_the_same_entries(synthetic_voc, tmp_path):
    from detect.config import load_config, keyed_settings
    from detect.stages import build_proposal_store, open_dataset

    settings = [f"data.root={synthetic_voc}", "proposals.max_side=200"]
    plain = load_config(None, [*settings, f"cache_dir={tmp_path / 'plain'}"])
    overlap = load_config(None, [*settings, f"cache_dir={tmp_path / 'overlap'}", "proposals.overlap=true"])
    # how fast, not what: in no key
    assert keyed_settings(plain)["proposals"] == keyed_settings(overlap)["proposals"]
    dataset = open_dataset(plain, "test", 3)
    one = build_proposal_store(plain, dataset, progress=False)
    assert one._thread is None and not one._pending
    back = build_proposal_store(overlap, dataset, progress=False)
    for image_id in dataset.image_ids:
        np.testing.assert_array_equal(back[image_id], one[image_id])
    assert back.wait().fill_seconds > 0
    assert os.path.basename(back.directory) == os.path.basename(one.directory)  # the same key
