import numpy as np
import pytest
import torch

from detect.spp import (
    SpatialPyramidPool,
    pool_whole_map,
    project_windows_to_map,
    pyramid_dim,
    spatial_pyramid_pool,
    spatial_pyramid_pool_reference,
    spatial_pyramid_pool_torch,
)


def random_cells(rng, n, h, w):
    x1 = rng.integers(0, w, n)
    y1 = rng.integers(0, h, n)
    x2 = np.minimum(w - 1, x1 + rng.integers(0, w, n))
    y2 = np.minimum(h - 1, y1 + rng.integers(0, h, n))
    return np.stack([x1, y1, x2, y2], 1)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("levels", [(6, 3, 2, 1), (4, 2, 1), (5, 3, 1), (1,), (3, 6)])
def test_fast_equals_reference(seed, levels):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    c, h, w = 7, int(rng.integers(1, 20)), int(rng.integers(1, 25))
    fm = torch.randn(c, h, w)
    cells = random_cells(rng, 60, h, w)
    # windows of one cell, and windows touching every border
    cells = np.concatenate([cells, [[0, 0, 0, 0], [w - 1, h - 1, w - 1, h - 1], [0, 0, w - 1, h - 1],
                                    [w - 1, 0, w - 1, h - 1], [0, h - 1, w - 1, h - 1]]])
    fast = spatial_pyramid_pool(fm, cells, levels)
    ref = spatial_pyramid_pool_reference(fm, cells, levels)
    assert fast.shape == (len(cells), pyramid_dim(c, levels))
    assert torch.equal(fast, ref)
    # the torch kernel (a GPU's), run here on the CPU
    assert torch.equal(spatial_pyramid_pool_torch(fm, cells, levels), ref)


def test_paper_bin_rule_by_hand():
    # one channel, a window of 4 cells wide: level 3 bins span [0,1], [1,2], [2,3]
    # (floor(i*4/3) .. ceil((i+1)*4/3)-1): overlapping, never empty
    fm = torch.tensor([[[1.0, 5.0, 2.0, 0.0]]])
    out = spatial_pyramid_pool(fm, [[0, 0, 3, 0]], levels=(3,))
    # rows of level 3 are identical (one row of cells), columns as above
    np.testing.assert_array_equal(out.view(3, 3)[0].numpy(), [5.0, 5.0, 2.0])
    # a 2-cell window at level 6: bins [0,0],[0,0],[0,1],[0,1]... floor(i*2/6)..ceil((i+1)*2/6)-1
    out6 = spatial_pyramid_pool(fm, [[1, 0, 2, 0]], levels=(6,)).view(6, 6)[0]
    np.testing.assert_array_equal(out6.numpy(), [5, 5, 5, 2, 2, 2])


def test_channel_major_layout_matches_torch_flatten():
    torch.manual_seed(0)
    fm = torch.randn(3, 12, 12)
    out = spatial_pyramid_pool(fm, [[0, 0, 11, 11]], levels=(6, 1))
    level6 = torch.nn.functional.adaptive_max_pool2d(fm[None], 6)[0]
    assert torch.equal(out[0, : 3 * 36], torch.flatten(level6))
    assert torch.equal(out[0, 3 * 36 :], fm.amax(dim=(1, 2)))


def test_whole_map_pooling_matches_and_is_differentiable():
    torch.manual_seed(1)
    fm = torch.randn(2, 4, 9, 14)
    whole = pool_whole_map(fm)
    for b in range(2):
        assert torch.equal(whole[b], spatial_pyramid_pool(fm[b], [[0, 0, 13, 8]])[0])
    x = torch.randn(1, 2, 5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: pool_whole_map(t, (3, 2, 1)), (x,))


def test_empty_and_bad_cells():
    fm = torch.randn(5, 4, 4)
    assert spatial_pyramid_pool(fm, np.zeros((0, 4), np.int64)).shape == (0, 250)
    with pytest.raises(ValueError):
        spatial_pyramid_pool(fm, [[0, 0, 4, 3]])
    with pytest.raises(ValueError):
        spatial_pyramid_pool(fm, [[2, 0, 1, 3]])
    assert SpatialPyramidPool((2, 1))(fm, [[0, 0, 3, 3]]).shape == (1, 25)


def test_projection_rule():
    # stride 16, cell j centred at 16 j + 0.5: cells strictly inside the window
    cells = project_windows_to_map([[0, 0, 160, 64], [17, 17, 33, 80]], stride=16, offset=0.5, map_height=10, map_width=20)
    # window [0, 160): centres 0.5 .. 144.5 are inside -> cells 0..9; [0, 64) in y -> 0..3
    np.testing.assert_array_equal(cells[0], [0, 0, 9, 3])
    # [17, 33): centre 16.5 is outside, 32.5 inside -> cell 2 only; [17, 80) -> 2..4
    np.testing.assert_array_equal(cells[1], [2, 2, 2, 4])


def test_projection_collapses_small_windows_and_clamps():
    # a 5 px window between two centres collapses to the cell nearest its centre
    cells = project_windows_to_map([[20, 20, 25, 25], [-50, -50, 2000, 2000]], 16, 0.5, 4, 6)
    np.testing.assert_array_equal(cells[0], [1, 1, 1, 1])
    np.testing.assert_array_equal(cells[1], [0, 0, 5, 3])
    assert project_windows_to_map(np.zeros((0, 4)), 16, 0.5, 4, 6).shape == (0, 4)
    rng = np.random.default_rng(0)
    xy = rng.uniform(-100, 900, (500, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0, 300, (500, 2))], 1)
    c = project_windows_to_map(boxes, 16, 8.0, 40, 50)
    assert (c[:, 0] <= c[:, 2]).all() and (c[:, 1] <= c[:, 3]).all()
    assert (c >= 0).all() and (c[:, 2] < 50).all() and (c[:, 3] < 40).all()


def test_threaded_fast_path_equals_reference():
    # enough windows for the kernel to split them over threads (ranges of whole chunks)
    from detect.spp import MIN_WINDOWS_PER_THREAD

    rng = np.random.default_rng(7)
    torch.manual_seed(7)
    fm = torch.randn(3, 11, 13)
    cells = random_cells(rng, 2 * MIN_WINDOWS_PER_THREAD + 37, 11, 13)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        fast = spatial_pyramid_pool(fm, cells)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(fast, spatial_pyramid_pool_reference(fm, cells))


def test_torch_kernel_chunks_and_edge_cases(monkeypatch):
    import detect.spp as spp

    rng = np.random.default_rng(11)
    fm = torch.randn(5, 9, 14)
    cells = random_cells(rng, 23, 9, 14)
    monkeypatch.setattr(spp, "TORCH_POOL_CHUNK", 6)  # several chunks, the last one short
    ref = spatial_pyramid_pool_reference(fm, cells)
    assert torch.equal(spatial_pyramid_pool_torch(fm, cells), ref)
    buf = torch.full((23, 5 * 50), float("nan"))
    assert spatial_pyramid_pool_torch(fm, cells, out=buf) is buf and torch.equal(buf, ref)
    # a level listed twice is written twice
    twice = spatial_pyramid_pool_torch(fm, cells, levels=(2, 1, 2))
    assert torch.equal(twice, spatial_pyramid_pool_reference(fm, cells, levels=(2, 1, 2)))
    assert spatial_pyramid_pool_torch(fm, np.zeros((0, 4), np.int64)).shape == (0, 5 * 50)
    with pytest.raises(ValueError, match="inside the feature map"):
        spatial_pyramid_pool_torch(fm, [[0, 0, 14, 3]])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_map_pools_on_the_device_exactly():
    rng = np.random.default_rng(5)
    fm = torch.randn(64, 43, 57)
    cells = random_cells(rng, 3000, 43, 57)
    out = spatial_pyramid_pool(fm.cuda(), cells)
    assert out.is_cuda
    assert torch.equal(out.cpu(), spatial_pyramid_pool(fm, cells))


def test_out_buffer_is_written_and_checked():
    rng = np.random.default_rng(2)
    fm = torch.randn(4, 10, 12)
    cells = random_cells(rng, 70, 10, 12)
    buf = torch.full((70, 4 * 50), float("nan"))
    got = spatial_pyramid_pool(fm, cells, out=buf)
    assert got is buf and torch.equal(buf, spatial_pyramid_pool_reference(fm, cells))
    with pytest.raises(ValueError, match="out must be"):
        spatial_pyramid_pool(fm, cells, out=torch.empty((69, 200)))
    with pytest.raises(ValueError, match="out must be"):
        spatial_pyramid_pool(fm, cells, out=torch.empty((200, 70)).T)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_lookup_indices_on_the_device_are_the_numpy_ones(device):
    from detect.spp import _lookup_indices

    rng = np.random.default_rng(9)
    cells = np.concatenate([random_cells(rng, 500, 43, 57), [[0, 0, 0, 0], [56, 42, 56, 42], [0, 0, 56, 42]]])
    for n in (1, 2, 3, 4, 6, 7):
        ref = _lookup_indices(cells, n, 43, 57, 7)
        got = _lookup_indices(torch.from_numpy(cells).to(device), n, 43, 57, 7)
        for r, g in zip(ref, got):
            np.testing.assert_array_equal(g.cpu().numpy(), r)
