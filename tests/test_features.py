import numpy as np
import pytest
import torch

from detect.config import NetworkConfig
from detect.features import ConvMaps, RCNNFeatures, SPPFeatures, compress_head
from detect.spp import pool_whole_map
from detect.trunks import build_network


@pytest.fixture(scope="module")
def net():
    return build_network(NetworkConfig(trunk="compact", fc_dim=64, init_seed=0))


def image(h=120, w=160, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def boxes(seed=0, n=40, h=120, w=160):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, [w - 10, h - 10], (n, 2))
    wh = rng.uniform(8, 100, (n, 2))
    b = np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1).astype(np.float32)
    return np.concatenate([b, b[:5]])  # exact duplicates too


def test_spp_shapes_layers_and_dedup(net):
    trunk, head = net
    spp = SPPFeatures(trunk, head, scales=(200,), max_side=1000)
    f, t = spp.extract(image(), boxes(), ("pool5", "fc6", "fc7"))
    assert f["pool5"].shape == (45, 128 * 50) and f["fc7"].shape == (45, 64)
    assert set(t) == {"conv", "pool", "fc"}
    np.testing.assert_array_equal(f["fc7"][40:], f["fc7"][:5])
    # fc7 equals the head applied to pool5
    with torch.no_grad():
        ref = head(torch.from_numpy(f["pool5"]), "fc7").numpy()
    np.testing.assert_allclose(f["fc7"], ref, rtol=1e-4, atol=1e-5)
    empty, _ = spp.extract(image(), np.zeros((0, 4), np.float32), ("fc7",))
    assert empty["fc7"].shape == (0, 64)


def test_distinct_windows_are_the_distinct_rows_of_their_cell_keys(net):
    """The scalar code SPPFeatures.distinct_windows sorts by gives np.unique(keys, axis=0)."""
    trunk, head = net
    spp = SPPFeatures(trunk, head, scales=(100, 150, 220), scale_target_size=40)
    b = boxes(n=300)
    maps = spp.compute_maps(image())
    unique, inverse = spp.distinct_windows(maps, b)
    keys = unique[inverse]  # every box's (scale, cells) row
    assert len(np.unique(keys[:, 0])) == 3  # windows pooled at every scale
    ref_unique, ref_inverse = np.unique(keys, axis=0, return_inverse=True)
    np.testing.assert_array_equal(unique, ref_unique)
    np.testing.assert_array_equal(inverse, ref_inverse.reshape(-1))
    assert len(unique) < len(b)


def test_maps_cache_round_trip(net):
    trunk, head = net
    spp = SPPFeatures(trunk, head, scales=(150, 220))
    maps = spp.compute_maps(image())
    again = ConvMaps.from_arrays(spp.compute_maps(image()).to_arrays())
    a = spp.features_from_maps(maps, boxes(), ("fc7",))["fc7"]
    b = spp.features_from_maps(again, boxes(), ("fc7",))["fc7"]
    np.testing.assert_allclose(a, b, rtol=0.02, atol=0.02)  # float16 storage


def test_scale_choice_picks_area_closest_to_target(net):
    trunk, head = net
    spp = SPPFeatures(trunk, head, scales=(100, 200, 400), scale_target_size=100)
    factors = [(1.0, 1.0), (2.0, 2.0), (4.0, 4.0)]
    b = np.array([[0, 0, 100, 100], [0, 0, 50, 50], [0, 0, 25, 25], [0, 0, 400, 400]], np.float32)
    np.testing.assert_array_equal(spp.choose_scales(factors, b), [0, 1, 2, 0])


def test_max_side_caps_huge_inputs(net):
    trunk, head = net
    spp = SPPFeatures(trunk, head, scales=(688,), max_side=320)
    assert spp.resized_size(4000, 6000, 688) == (213, 320)
    maps = spp.compute_maps(np.zeros((400, 600, 3), np.uint8))
    # 213 x 320 at total stride 8: 27 x 40 cells
    assert trunk.stride == 8 and maps.maps[0].shape[1:] == (27, 40)


def test_rcnn_warp_geometry_and_features(net):
    trunk, head = net
    rc = RCNNFeatures(trunk, head, crop_size=32, context_pad=4)
    img = np.zeros((100, 100, 3), np.uint8)
    img[20:60, 30:50] = 255
    crop = rc.warp(img, np.array([[30, 20, 50, 60]], np.float32))[0]
    # the box fills the central 24 x 24 pixels, context (black) around it
    assert crop[4:28, 4:28].min() > 200 and crop[0:3].max() < 60 and crop[:, 29:].max() < 60
    # outside the image: the trunk's mean colour (normalises to 0)
    far = rc.warp(img, np.array([[-300, -300, -200, -200]], np.float32))[0]
    assert (far == 128).all()
    f, t = rc.extract(image(), boxes(), ("pool5", "fc7"))
    assert f["fc7"].shape == (45, 64) and set(t) == {"warp", "conv", "pool", "fc"}
    # pool5 of one window equals the pyramid of the trunk on its warped crop
    one = rc.warp(image(), boxes()[:1])
    with torch.no_grad():
        x = trunk.normalize(torch.from_numpy(one).permute(0, 3, 1, 2))
        ref = pool_whole_map(trunk(x, inputs="crop")).numpy()
    np.testing.assert_allclose(f["pool5"][0], ref[0], rtol=1e-5, atol=1e-5)


def test_rcnn_normalises_with_crop_statistics_and_spp_with_image_ones():
    trunk, head = build_network(NetworkConfig(trunk="compact", fc_dim=16, init_seed=1))
    rc = RCNNFeatures(trunk, head, crop_size=32, context_pad=4)
    spp = SPPFeatures(trunk, head, scales=(120,))
    before_rc = rc.extract(image(), boxes()[:6], ("pool5",))[0]["pool5"]
    before_spp = spp.extract(image(), boxes()[:6], ("pool5",))[0]["pool5"]
    with torch.no_grad():
        trunk.features[1].crop_running_mean.fill_(3.0)  # only the crop statistics change
    assert not np.allclose(rc.extract(image(), boxes()[:6], ("pool5",))[0]["pool5"], before_rc)
    np.testing.assert_array_equal(spp.extract(image(), boxes()[:6], ("pool5",))[0]["pool5"], before_spp)


def test_svd_compressed_head_approximates(net):
    _, head = net
    x = torch.randn(20, head.in_dim)
    full = compress_head(head, rank=64)  # full rank: exact up to rounding
    with torch.no_grad():
        torch.testing.assert_close(full(x, "fc7"), head(x, "fc7"), rtol=1e-3, atol=1e-4)
        low = compress_head(head, rank=8)
        assert low.fc6[0].weight.shape == (8, head.in_dim)
        assert low(x, "fc7").shape == (20, 64)


def test_svd_compression_is_exact_on_a_low_rank_layer():
    from detect.trunks import FCHead

    torch.manual_seed(0)
    head = FCHead(400, 300).eval()
    with torch.no_grad():  # rank-10 fc6 and fc7: the randomized path must recover them
        head.fc6.weight.copy_(torch.randn(300, 10) @ torch.randn(10, 400) / 20)
        head.fc7.weight.copy_(torch.randn(300, 10) @ torch.randn(10, 300) / 20)
        small = compress_head(head, rank=10)
        x = torch.randn(7, 400)
        torch.testing.assert_close(small(x, "fc7"), head(x, "fc7"), rtol=1e-3, atol=1e-4)


def test_multiscale_pool5_comes_from_each_windows_chosen_scale(net):
    from detect.spp import project_windows_to_map, spatial_pyramid_pool_reference

    trunk, head = net
    spp = SPPFeatures(trunk, head, scales=(100, 160, 260), scale_target_size=40)
    maps = spp.compute_maps(image())
    b = boxes(seed=3)
    pool5 = spp.features_from_maps(maps, b, ("pool5",))["pool5"]
    which = spp.choose_scales(maps.factors, b)
    assert len(set(which.tolist())) == 3  # every scale is used
    for i, k in enumerate(which):
        fx, fy = maps.factors[k]
        fmap = maps.maps[k]
        cells = project_windows_to_map(b[i : i + 1] * [fx, fy, fx, fy], trunk.stride, trunk.offset, *fmap.shape[1:])
        np.testing.assert_array_equal(pool5[i], spatial_pyramid_pool_reference(fmap, cells)[0].numpy())
    keys, inverse = spp.distinct_windows(maps, b)
    assert len(keys) < len(b) and (keys[inverse][:, 0] == which).all()


def test_torch_warp_matches_the_cv2_warp():
    from detect.features import warp_windows, warp_windows_torch

    trunk, _ = build_network(NetworkConfig(trunk="compact", fc_dim=16, init_seed=0))
    # a smooth image (bilinear weights differ only by cv2's fixed-point rounding) with
    # windows inside, across the border and far outside
    yy, xx = np.mgrid[0:90, 0:130]
    img = np.stack([xx * 1.9, yy * 2.7, (xx + yy) * 1.1], -1).clip(0, 255).astype(np.uint8)
    b = np.array([[10, 5, 60, 70], [0, 0, 130, 90], [-20, 30, 40, 120], [100.5, 10.25, 129.75, 40.5],
                  [-300, -300, -200, -200], [50, 50, 52, 51]], np.float32)
    border = tuple(float(v) for v in trunk.pixel_mean.flatten().tolist())
    ref = trunk.normalize(torch.from_numpy(warp_windows(img, b, 40, 6, border)).permute(0, 3, 1, 2))
    normalized = trunk.normalize(torch.from_numpy(img).permute(2, 0, 1)[None])[0]
    out = warp_windows_torch(normalized, b, 40, 6)
    assert out.shape == (6, 3, 40, 40)
    # within 1.5 grey levels (of pixel_std 64) everywhere, 0.6 on average
    diff = (out - ref).abs() * 64
    assert diff.max() < 1.5 and diff.mean() < 0.6
    assert warp_windows_torch(normalized, np.zeros((0, 4), np.float32), 40, 6).shape == (0, 3, 40, 40)


def test_rcnn_torch_warp_gives_nearly_the_cv2_features(net):
    trunk, head = net
    a = RCNNFeatures(trunk, head, crop_size=32, context_pad=4, warp="cv2").extract(image(), boxes(), ("pool5",))[0]
    b, t = RCNNFeatures(trunk, head, crop_size=32, context_pad=4, warp="torch").extract(image(), boxes(), ("pool5",))
    assert set(t) == {"warp", "conv", "pool", "fc"}
    # random-noise images: bilinear rounding differences of a few grey levels per pixel
    scale = np.abs(a["pool5"]).mean()
    assert np.abs(a["pool5"] - b["pool5"]).mean() < 0.05 * scale
    with pytest.raises(ValueError, match="warp"):
        RCNNFeatures(trunk, head, warp="nearest")


def test_device_names_are_checked(net):
    from detect.features import resolve_device
    from sppcore.errors import UserError

    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="not a device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            SPPFeatures(*net, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_features_match_the_cpu_ones():
    trunk, head = build_network(NetworkConfig(trunk="compact", fc_dim=64, init_seed=0))
    img, b = image(240, 320), boxes(n=300, h=240, w=320)
    cpu_spp = SPPFeatures(trunk, head, scales=(200, 300)).extract(img, b, ("pool5", "fc7"))[0]
    cpu_rc = RCNNFeatures(trunk, head, crop_size=64, context_pad=4).extract(img, b, ("pool5", "fc7"))[0]
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    gpu_spp, t = SPPFeatures(trunk, head, scales=(200, 300), device="cuda").extract(img, b, ("pool5", "fc7"))
    assert set(t) == {"conv", "pool", "fc"}
    for layer in ("pool5", "fc7"):
        np.testing.assert_allclose(gpu_spp[layer], cpu_spp[layer], rtol=1e-3, atol=1e-3)
    gpu_rc = RCNNFeatures(trunk, head, crop_size=64, context_pad=4, device="cuda").extract(img, b, ("pool5", "fc7"))[0]
    # the GPU warps with grid_sample, the CPU with cv2: near, not equal
    assert np.abs(gpu_rc["pool5"] - cpu_rc["pool5"]).mean() < 0.05 * np.abs(cpu_rc["pool5"]).mean()
    exact_warp = RCNNFeatures(trunk, head, crop_size=64, context_pad=4, device="cuda", warp="cv2")
    np.testing.assert_allclose(exact_warp.extract(img, b, ("fc7",))[0]["fc7"], cpu_rc["fc7"], rtol=1e-3, atol=1e-3)


def test_reused_pool_buffer_leaves_earlier_features_intact(net):
    trunk, head = net
    spp = SPPFeatures(trunk, head, scales=(100, 200))
    first = spp.extract(image(seed=1), boxes(seed=1), ("pool5", "fc7"))[0]
    spp.extract(image(seed=2), boxes(seed=2, n=80), ("pool5", "fc7"))  # the same buffer, rewritten
    fresh = SPPFeatures(trunk, head, scales=(100, 200))
    again = fresh.extract(image(seed=1), boxes(seed=1), ("pool5", "fc7"))[0]
    for layer in ("pool5", "fc7"):
        np.testing.assert_array_equal(first[layer], again[layer])
    # the public pool() returns memory of its own
    maps = fresh.compute_maps(image(seed=1))
    a, _ = fresh.pool(maps, boxes(seed=1))
    b, _ = fresh.pool(maps, boxes(seed=1))
    assert a.data_ptr() != b.data_ptr() and torch.equal(a, b)


@pytest.mark.parametrize("kind", ["spp", "rcnn"])
def test_both_extractors_implement_one_interface(net, kind):
    """features_from_source(image_source(image)) is extract(image)'s features, whichever
    the method; the registry and the config rule name the same methods."""
    from detect.config import EXTRACTOR_NAMES
    from detect.features import EXTRACTORS, WindowExtractor

    assert tuple(EXTRACTORS) == EXTRACTOR_NAMES
    trunk, head = net
    ex = SPPFeatures(trunk, head, scales=(200,)) if kind == "spp" else RCNNFeatures(trunk, head, crop_size=32, context_pad=4)
    assert isinstance(ex, WindowExtractor) and ex.source_is_cacheable == (kind == "spp")
    img, b = image(), boxes(n=12)
    direct, _ = ex.extract(img, b, ("pool5", "fc7"))
    via = ex.features_from_source(ex.image_source(img), b, ("pool5", "fc7"))
    for layer in ("pool5", "fc7"):
        np.testing.assert_array_equal(via[layer], direct[layer])
    pooled, inverse = ex.pool(ex.image_source(img), b)
    np.testing.assert_allclose(pooled.numpy()[inverse], direct["pool5"], rtol=1e-6, atol=1e-6)


def test_nothing_outside_the_extractors_asks_which_one_it_has():
    import ast
    import os

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "detect")
    offenders = []
    for name in sorted(os.listdir(root)):
        if not name.endswith(".py") or name == "features.py":
            continue
        with open(os.path.join(root, name), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
                names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                if names & {"SPPFeatures", "RCNNFeatures"}:
                    offenders.append(f"{name}:{node.lineno}")
    assert not offenders, offenders


def test_the_fc_chain_is_one_pass_for_every_layer(net):
    _, head = net
    x = torch.randn(7, head.in_dim)
    head.add_classifier(4)
    with torch.no_grad():
        every = head.forward_layers(x, ("pool5", "fc6", "fc7", "fc8"))
        for layer in ("pool5", "fc6", "fc7", "fc8"):
            torch.testing.assert_close(head(x, layer), every[layer], rtol=0, atol=0)
        torch.testing.assert_close(every["fc7"], torch.relu(head.fc7(torch.relu(head.fc6(x)))), rtol=1e-6, atol=1e-6)
    head.fc8 = None
    with pytest.raises(ValueError, match="fc8 does not exist"):
        head.forward_layers(x, ("fc8",))
    with pytest.raises(ValueError, match="unknown layer"):
        head.forward_layers(x, ("fc9",))
