import pytest
import torch
from torch import nn

from detect.config import NetworkConfig
from detect.spp import pool_whole_map
from detect.trunks import (
    FCHead,
    build_network,
    build_trunk,
    load_network,
    save_network,
    spp_fc6_from_6x6,
    trunk_geometry,
)
from sppcore.errors import UserError


def test_geometry_from_layers():
    # AlexNet: conv 11/4 p2, pool 3/2, conv 5 p2, pool 3/2, 3 convs 3 p1 -> stride 16,
    # centre of cell 0 at 0.5 + (5 - 2) + 4 * 1 + 8 * 1 = 15.5
    assert (build_trunk("alexnet").stride, build_trunk("alexnet").offset) == (16, 15.5)
    # VGG16: 3x3 p1 convs and four 2x2/2 pools: 0.5 + 0.5 * (1 + 2 + 4 + 8) = 8.0
    assert (build_trunk("vgg16").stride, build_trunk("vgg16").offset) == (16, 8.0)
    # EfficientNet-Lite0 up to its 112-channel stage: nested blocks walked in order, four
    # stride-2 convs padded k // 2 -> stride 16, cell 0 centred on pixel 0
    assert (build_trunk("efficientnet_lite0").stride, build_trunk("efficientnet_lite0").offset) == (16, 0.5)
    assert trunk_geometry([nn.Sequential(nn.Conv2d(1, 1, 3, 2, 0), nn.ReLU()), nn.MaxPool2d(2, 2)]) == (4, 2.5)
    assert trunk_geometry([nn.Conv2d(1, 1, 3, 2, 0)]) == (2, 1.5)


@pytest.mark.parametrize("name", ["compact", "zf5", "alexnet", "vgg16"])
def test_geometry_matches_the_receptive_field_centre(name):
    # With max pools swapped for average pools of the same geometry and the nonlinearities
    # removed, the gradient of one conv5 cell covers its whole receptive field, which is
    # centred on offset + stride * j.
    trunk = build_trunk(name)
    layers = []
    for m in trunk.features:
        if isinstance(m, nn.MaxPool2d):
            layers.append(nn.AvgPool2d(m.kernel_size, m.stride, m.padding))
        elif isinstance(m, nn.Conv2d):
            conv = nn.Conv2d(1, 1, m.kernel_size, m.stride, m.padding, bias=False)
            nn.init.constant_(conv.weight, 1.0)
            layers.append(conv)
    net = nn.Sequential(*layers)
    x = torch.zeros(1, 1, 400, 400, requires_grad=True)
    y = net(x)
    j = y.shape[-1] // 2
    y[0, 0, j, j].backward()
    cols = torch.nonzero(x.grad[0, 0].abs().sum(0) > 0).flatten().float()
    centre = (cols.min() + cols.max() + 1) / 2  # continuous centre of the support
    assert float(centre) == pytest.approx(trunk.offset + trunk.stride * j, abs=1e-6)


def test_spp_fc6_equals_pretrained_fc6_on_the_6x6_level(tmp_path):
    torch.manual_seed(0)
    c = 8
    fc6_6x6 = nn.Linear(c * 36, 16)
    w = spp_fc6_from_6x6(fc6_6x6.weight.detach(), c, (6, 3, 2, 1))
    spp_fc6 = nn.Linear(w.shape[1], 16)
    with torch.no_grad():
        spp_fc6.weight.copy_(w)
        spp_fc6.bias.copy_(fc6_6x6.bias)
    maps = torch.randn(5, c, 13, 13)
    pooled6 = torch.nn.functional.adaptive_max_pool2d(maps, 6).flatten(1)
    torch.testing.assert_close(spp_fc6(pool_whole_map(maps)), fc6_6x6(pooled6), rtol=1e-5, atol=1e-5)


def test_torchvision_state_dict_file(tmp_path):
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.alexnet(weights=None)
    path = tmp_path / "alexnet.pth"
    torch.save(net.state_dict(), path)
    trunk, head = build_network(NetworkConfig(trunk="alexnet", weights=str(path)))
    x = torch.randn(2, 3, 227, 227)
    with torch.no_grad():
        conv5 = trunk(x)
        # torchvision: features (incl. the last pool) -> avgpool (identity at 6x6) -> fc6 -> ReLU
        ref = torch.relu(net.classifier[1](torch.flatten(net.avgpool(net.features(x)), 1)))
        ours = head(pool_whole_map(conv5), "fc6")
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_save_and_load_network_round_trip(tmp_path):
    cfg = NetworkConfig(trunk="compact", fc_dim=32, init_seed=3)
    trunk, head = build_network(cfg)
    with torch.no_grad():
        trunk.features[1].crop_running_mean.uniform_(-1, 1)  # distinct from the image statistics
    head.add_classifier(5)
    path = save_network(trunk, head, str(tmp_path / "net.npz"))
    trunk2, head2 = load_network(path)
    assert any(k.endswith("crop_running_mean") for k in trunk2.state_dict())  # both kinds' statistics
    for a, b in zip(list(trunk.state_dict().values()) + list(head.state_dict().values()),
                    list(trunk2.state_dict().values()) + list(head2.state_dict().values())):
        assert torch.equal(a, b)
    # also through the config path
    trunk3, head3 = build_network(NetworkConfig(trunk="compact", fc_dim=32, weights=path))
    assert torch.equal(head3.fc8.weight, head.fc8.weight)


def test_random_init_is_seeded_and_errors_are_clear(tmp_path):
    a = build_network(NetworkConfig(trunk="compact", fc_dim=16, init_seed=1))[1].fc6.weight
    b = build_network(NetworkConfig(trunk="compact", fc_dim=16, init_seed=1))[1].fc6.weight
    assert torch.equal(a, b)
    with pytest.raises(UserError, match="unknown trunk"):
        build_network(NetworkConfig(trunk="resnet"))
    with pytest.raises(UserError, match="weights file not found"):
        build_network(NetworkConfig(trunk="compact", weights=str(tmp_path / "none.npz")))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a readable state-dict"):
        build_network(NetworkConfig(trunk="compact", weights=str(bad)))
    with pytest.raises(UserError, match="no ImageNet weights"):
        build_network(NetworkConfig(trunk="compact", weights="imagenet"))
    trunk, head = build_network(NetworkConfig(trunk="compact", fc_dim=16))
    path = save_network(trunk, head, str(tmp_path / "c.npz"))
    with pytest.raises(UserError, match="do not fit trunk 'zf5'"):
        build_network(NetworkConfig(trunk="zf5", fc_dim=16, weights=path))


def test_imagenet_offline_names_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.models.AlexNet_Weights.IMAGENET1K_V1.__class__, "get_state_dict",
                        lambda self, *a, **k: offline())
    with pytest.raises(UserError, match=r"place alexnet-owt-.*\.pth in .*checkpoints"):
        build_network(NetworkConfig(trunk="alexnet", weights="imagenet"))


def test_head_layers():
    head = FCHead(10, 6).eval()
    x = torch.randn(3, 10)
    assert head(x, "pool5") is x
    assert head(x, "fc6").shape == (3, 6) and (head(x, "fc7") >= 0).all()
    with pytest.raises(ValueError):
        head(x, "fc8")
    head.add_classifier(4)
    assert head(x, "fc8").shape == (3, 4)


@pytest.mark.parametrize("size", [5, 4, 1])
def test_cross_channel_lrn_equals_torch(size):
    from detect.trunks import CrossChannelLRN

    torch.manual_seed(size)
    x = torch.relu(torch.randn(2, 9, 6, 7)) * 30  # large values: the normalisation matters
    ref = nn.LocalResponseNorm(size, 1e-3, 0.75, 2.0)(x)
    ours = CrossChannelLRN(size, 1e-3, 0.75, 2.0)
    torch.testing.assert_close(ours(x), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours(x.contiguous(memory_format=torch.channels_last)), ref, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ref, x)


def test_trunk_runs_channels_last_with_the_same_result():
    trunk = build_trunk("compact").eval()
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        y = trunk(x)
        # the same layers applied to the usual layout, as a reference
        ref = x
        for m in trunk.features:
            ref = m(ref.contiguous())
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)


def test_batch_norm_keeps_statistics_per_kind_of_input():
    from detect.trunks import PerInputBatchNorm2d

    torch.manual_seed(0)
    trunk = build_trunk("compact").eval()
    bns = [m for m in trunk.features if isinstance(m, PerInputBatchNorm2d)]
    assert bns, "the compact trunk is batch-normalised"
    with torch.no_grad():
        for bn in bns:
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
            bn.crop_running_mean.uniform_(-1, 1), bn.crop_running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, 40, 48)
    # reference: the same layers with plain batch norm carrying each kind's statistics
    for kind, (mean, var) in {"image": ("running_mean", "running_var"),
                              "crop": ("crop_running_mean", "crop_running_var")}.items():
        layers = []
        for m in trunk.features:
            if isinstance(m, PerInputBatchNorm2d):
                plain = nn.BatchNorm2d(m.num_features).eval()
                plain.load_state_dict({"weight": m.weight, "bias": m.bias, "running_mean": getattr(m, mean),
                                       "running_var": getattr(m, var), "num_batches_tracked": m.num_batches_tracked})
                layers.append(plain)
            else:
                layers.append(m)
        with torch.no_grad():
            expected = nn.Sequential(*layers)(x)
            torch.testing.assert_close(trunk(x, inputs=kind), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        assert not torch.allclose(trunk(x, inputs="crop"), trunk(x))
    with pytest.raises(ValueError, match="inputs"):
        trunk(x, inputs="window")
    # training in one kind updates that kind's statistics only
    bn = bns[0]
    image_stats, crop_stats = bn.running_mean.clone(), bn.crop_running_mean.clone()
    trunk.train()
    trunk(x, inputs="crop")
    assert torch.equal(bn.running_mean, image_stats) and not torch.equal(bn.crop_running_mean, crop_stats)
    trunk.copy_statistics("crop", "image")
    assert torch.equal(bn.running_mean, bn.crop_running_mean) and torch.equal(bn.running_var, bn.crop_running_var)


def test_network_remembers_its_pyramid_levels(tmp_path):
    # the same 50 bins in another order would load silently and scramble fc6's input
    import json

    cfg = NetworkConfig(trunk="compact", fc_dim=16)
    trunk, head = build_network(cfg, levels=(6, 3, 2, 1))
    path = save_network(trunk, head, str(tmp_path / "net.npz"))
    with open(path + ".json", encoding="utf-8") as f:
        assert json.load(f)["levels"] == [6, 3, 2, 1]
    message = r"network\.levels \[6, 3, 2, 1\].*network\.levels \[1, 2, 3, 6\]"
    with pytest.raises(UserError, match=message) as info:
        load_network(path, levels=(1, 2, 3, 6))
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match=message):
        build_network(NetworkConfig(trunk="compact", fc_dim=16, weights=path, levels=(1, 2, 3, 6)))
    with pytest.raises(UserError, match="network.levels"):
        load_network(path, levels=(4, 2, 1))
    load_network(path, levels=(6, 3, 2, 1))  # the saved levels load
    # a file saved before levels were recorded loads as before
    with open(path + ".json", encoding="utf-8") as f:
        meta = json.load(f)
    del meta["levels"]
    with open(path + ".json", "w", encoding="utf-8") as f:
        json.dump(meta, f)
    _, head2 = load_network(path, levels=(1, 2, 3, 6))
    assert torch.equal(head2.fc6.weight, head.fc6.weight)
