import os

import cv2
import numpy as np
import pytest
import scipy.io

from proposals import ProposalConfig, ProposalStore, compute_proposals
from proposals.matfile import internal_to_rcnn_mat, load_rcnn_mat, rcnn_mat_to_internal
from sppcore.errors import ProposalError


def cells(items, column=True):
    """A MATLAB cell array (R-CNN's files hold N x 1 cells)."""
    out = np.empty((len(items), 1) if column else (1, len(items)), dtype=object)
    for i, item in enumerate(items):
        out.flat[i] = item
    return out


def write_mat(path, boxes_by_id, column=True):
    ids = list(boxes_by_id)
    scipy.io.savemat(path, {"images": cells(ids, column),
                            "boxes": cells([np.asarray(boxes_by_id[i], np.float64).reshape(-1, 4) for i in ids], column)})
    return str(path)


def test_conversion_round_trip():
    # pixel rows 1..10 and columns 2..20 (1-based inclusive) = internal x 1..20, y 0..10
    np.testing.assert_array_equal(rcnn_mat_to_internal([[1, 2, 10, 20]]), [[1, 0, 20, 10]])
    boxes = np.array([[0, 0, 5, 7], [3.5, 2, 40, 30]], np.float32)
    np.testing.assert_array_equal(rcnn_mat_to_internal(internal_to_rcnn_mat(boxes)), boxes)
    assert rcnn_mat_to_internal(np.zeros((0, 4))).shape == (0, 4)


@pytest.mark.parametrize("column", [True, False])
def test_load_keeps_file_order_and_filters(tmp_path, column):
    path = write_mat(tmp_path / "s.mat", {"000001": [[1, 2, 10, 20], [5, 5, 30, 40]], "000002": np.zeros((0, 4)),
                                          "000003": [[1, 1, 2, 2]]}, column)
    allb = load_rcnn_mat(path)
    assert list(allb) == ["000001", "000002", "000003"]
    np.testing.assert_array_equal(allb["000001"], [[1, 0, 20, 10], [4, 4, 40, 30]])
    assert allb["000002"].shape == (0, 4) and allb["000001"].dtype == np.float32
    assert list(load_rcnn_mat(path, {"000003"})) == ["000003"]


def test_bad_mat_files(tmp_path):
    bad = tmp_path / "bad.mat"
    bad.write_bytes(b"plain text")
    with pytest.raises(ProposalError, match=r"bad\.mat: not a readable MATLAB"):
        load_rcnn_mat(str(bad))
    other = tmp_path / "other.mat"
    scipy.io.savemat(other, {"x": np.zeros(3)})
    with pytest.raises(ProposalError, match="'images' and 'boxes'"):
        load_rcnn_mat(str(other))
    shape = write_mat(tmp_path / "shape.mat", {"a": np.zeros((2, 4))})
    scipy.io.savemat(shape, {"images": cells(["a"]), "boxes": cells([np.zeros((2, 3))])})
    with pytest.raises(ProposalError, match=r"image a have shape \(2, 3\)"):
        load_rcnn_mat(shape)


def test_store_imports_mat_directory(tmp_path):
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        cv2.imwrite(str(p), np.zeros((50, 60, 3), np.uint8))
        paths.append(str(p))
    ids = ["000001", "000002", "000003"]
    mats = tmp_path / "selective_search_data"
    mats.mkdir()
    rows = np.array([[1, 1, 20, 30], [2, 3, 40, 50], [5, 5, 9, 9]], np.float64)
    write_mat(mats / "voc_2007_trainval.mat", {"000001": rows, "000002": rows[:1]})
    write_mat(mats / "voc_2007_test.mat", {"000003": rows[::-1]})
    cfg = ProposalConfig(backend="rcnn_mat", mat_path=str(mats), max_boxes=2)
    store = ProposalStore.build(cfg, ids, paths, str(tmp_path / "cache"), progress=False)
    np.testing.assert_array_equal(store["000001"], rcnn_mat_to_internal(rows[:2]))  # file order, capped
    np.testing.assert_array_equal(store["000003"], rcnn_mat_to_internal(rows[::-1][:2]))
    assert np.isnan(store.seconds("000002"))
    # the key follows the .mat files
    os.utime(mats / "voc_2007_test.mat", ns=(1, 1))
    assert ProposalStore.build(cfg, ids, paths, str(tmp_path / "cache"), progress=False).directory != store.directory
    # an image in no file is a clear error, and compute_proposals cannot compute rcnn_mat
    with pytest.raises(ProposalError, match="no boxes for image 000004"):
        ProposalStore.build(cfg, ids + ["000004"], paths + paths[:1], str(tmp_path / "cache"), progress=False)
    with pytest.raises(ProposalError, match="needs proposals.mat_path"):
        ProposalStore.build(ProposalConfig(backend="rcnn_mat"), ids, paths, str(tmp_path / "cache"), progress=False)
    with pytest.raises(ProposalError, match="cannot compute"):
        compute_proposals(np.zeros((50, 60, 3), np.uint8), cfg)
