"""The proposal store's keys: entries per image, shared by subsets and supersets."""
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
