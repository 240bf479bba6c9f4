import numpy as np
import pytest
import torch

from detect.config import NetworkConfig
from detect.pretrain import BACKGROUND_IOU, CropSampler, pretrain
from detect.trunks import build_network
from detect.voc import VOCDataset
from sppcore.boxes import box_iou
from tooling import record_threads


def test_crop_sampler_labels_and_determinism(synthetic_voc):
    ds = VOCDataset(synthetic_voc, "train")
    sampler = CropSampler(ds, background_per_image=3)
    crops, labels = sampler.epoch(np.random.default_rng(0), 40, (128.0, 128.0, 128.0))
    again, labels2 = sampler.epoch(np.random.default_rng(0), 40, (128.0, 128.0, 128.0))
    assert crops.shape[1:] == (40, 40, 3) and crops.dtype == np.uint8
    assert np.array_equal(crops, again) and np.array_equal(labels, labels2)
    n_objects = sum(len(ds.annotation(i).labels) for i in ds.image_ids)
    assert (labels > 0).sum() == n_objects
    assert labels.max() <= len(ds.classes) and (labels == 0).sum() > 0
    # background windows stay clear of every object
    ann = ds.annotation(ds.image_ids[0])
    bg = sampler._background(np.random.default_rng(1), ann, 10)
    if len(ann.boxes):
        assert (box_iou(bg, ann.boxes).max(axis=1) < BACKGROUND_IOU).all()


def test_multi_size_pretraining_alternates_sizes_and_trains(synthetic_voc):
    ds = VOCDataset(synthetic_voc, "trainval")
    trunk, head = build_network(NetworkConfig(trunk="compact", fc_dim=32))
    head.add_classifier(len(ds.classes) + 1)
    before = trunk.features[0].weight.detach().clone()
    sampler = CropSampler(ds, background_per_image=2)
    result = pretrain(trunk, head, (6, 3, 2, 1), sampler, sampler, sizes=(48, 40), epochs=2, batch_size=16,
                      lr=1e-3, progress=False)
    assert [r["size"] for r in result.history] == [48, 40]  # epochs alternate between sizes
    assert not torch.equal(before, trunk.features[0].weight)
    # crops only: whole images normalise with the crops' batch-norm statistics
    bn = trunk.features[1]
    assert torch.equal(bn.running_mean, bn.crop_running_mean) and bn.running_mean.abs().sum() > 0
    assert 0.0 <= result.val_accuracy <= 1.0
    assert all(np.isfinite(r["loss"]) for r in result.history)


def test_whole_image_epochs_pool_windows_as_the_detector_does(synthetic_voc):
    from detect.features import SPPFeatures
    from detect.pretrain import ClassifierNet

    ds = VOCDataset(synthetic_voc, "trainval")
    trunk, head = build_network(NetworkConfig(trunk="compact", fc_dim=32))
    head.add_classifier(len(ds.classes) + 1)
    sampler = CropSampler(ds, background_per_image=2)
    result = pretrain(trunk, head, (6, 3, 2, 1), sampler, sampler, sizes=(48,), epochs=3, batch_size=16,
                      lr=1e-3, progress=False, image_scales=(96, 160))
    assert [r["size"] for r in result.history] == [48, "image", 48]
    assert 0.0 <= result.val_image_accuracy <= 1.0
    # crop epochs and image epochs each measured their own batch-norm statistics
    bn = trunk.features[1]
    assert not torch.allclose(bn.running_mean, bn.crop_running_mean)
    assert bn.running_mean.abs().sum() > 0 and bn.crop_running_mean.abs().sum() > 0
    # the training-time pooling of a window equals SPP-net's detection-time features
    trunk.eval(), head.eval()
    net = ClassifierNet(trunk, head, (6, 3, 2, 1))
    image = sampler.images[0]
    windows = np.array([[5, 8, 60, 70], [0, 0, image.shape[1], image.shape[0]]], np.float32)
    with torch.no_grad():
        logits = net.forward_image(image, windows)
    spp = SPPFeatures(trunk, head, scales=(min(image.shape[:2]),))
    fc7 = spp.extract(image, windows, ("fc7",))[0]["fc7"]
    with torch.no_grad():
        expected = head.fc8(torch.from_numpy(fc7))
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


def test_pretraining_keeps_finished_runs(synthetic_voc, tmp_path, monkeypatch):
    import detect.pipeline as pipeline
    from detect.config import load_config

    cfg = load_config(None, [f"data.root={synthetic_voc}", f"output_dir={tmp_path}", "network.fc_dim=16",
                             "pretrain.sizes=[40,32]", "pretrain.epochs=1", "pretrain.train_set=train",
                             "pretrain.val_set=val"])
    first = pipeline.run_pretraining(cfg, progress=False)
    assert [r["sizes"] for r in first["runs"]] == [[40, 32]]
    calls = []
    import detect.pretrain as pretrain_module  # run_pretraining imports it when called

    original = pretrain_module.pretrain

    def counting(*args, **kwargs):
        calls.append(kwargs["sizes"])
        return original(*args, **kwargs)

    monkeypatch.setattr(pretrain_module, "pretrain", counting)
    both = pipeline.run_pretraining(cfg, compare=True, progress=False)
    assert calls == [(40,)]  # only the missing single-size run trains
    assert [r["sizes"] for r in both["runs"]] == [[40, 32], [40]]
    assert both["runs"][0] == first["runs"][0]
    assert pipeline.run_pretraining(cfg, compare=True, progress=False) == both and calls == [(40,)]


def test_pretraining_runs_on_its_own_threads_and_is_keyed_by_them_and_the_kernels(synthetic_voc, tmp_path,
                                                                                 monkeypatch):
    """The pretrained network depends on torch's thread count and CPU kernels: it trains on
    pretrain.threads (restored after), and a network trained with other threads or other
    kernels is never reused."""
    import detect.pipeline as pipeline
    import detect.pretrain as pretrain_module
    from detect.config import load_config

    base = [f"data.root={synthetic_voc}", f"output_dir={tmp_path}", "network.fc_dim=16", "pretrain.sizes=[40]",
            "pretrain.epochs=1", "pretrain.train_set=train", "pretrain.val_set=val"]
    seen = record_threads(monkeypatch, pretrain_module, "pretrain")
    before = torch.get_num_threads()
    cfg = load_config(None, base)
    assert cfg.pretrain.threads == 2
    first = pipeline.run_pretraining(cfg, progress=False)
    assert seen == [2] and torch.get_num_threads() == before
    assert first["cpu_kernels"] == pipeline.cpu_kernels()
    assert pipeline.run_pretraining(cfg, progress=False) == first and seen == [2]  # reused
    one = load_config(None, base + ["pretrain.threads=1"])
    assert pipeline.run_pretraining(one, progress=False)["key"] != first["key"] and seen == [2, 1]
    assert torch.get_num_threads() == before
    other_kernels = "NOT_" + pipeline.cpu_kernels()  # this process's kernels depend on the machine
    monkeypatch.setattr(pipeline, "cpu_kernels", lambda: other_kernels)
    other = pipeline.run_pretraining(one, progress=False)
    assert seen == [2, 1, 1] and other["cpu_kernels"] == other_kernels
    # trained on a GPU, the network is keyed by that too (detect.features.layer_numerics)
    assert pipeline._gpu_numerics("cpu") == {}
    assert pipeline._gpu_numerics("cuda")["numerics"]["device"] == "cuda"
    monkeypatch.setattr(pipeline, "_gpu_numerics", lambda device: {"numerics": {"device": "elsewhere"}})
    assert pipeline.run_pretraining(one, progress=False)["key"] != other["key"] and seen == [2, 1, 1, 1]


def test_intra_op_threads_zero_leaves_torch_alone():
    from detect.features import intra_op_threads

    before = torch.get_num_threads()
    with intra_op_threads(0):
        assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with intra_op_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("restored on the way out")
    assert torch.get_num_threads() == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pretraining_on_the_gpu_trains_and_leaves_the_network_on_the_cpu(synthetic_voc):
    """``features.device=cuda``: crop and whole-image epochs run on the GPU; the result
    is close to the CPU run's and the network comes back on the CPU, ready to save."""
    ds = VOCDataset(synthetic_voc, "trainval")
    results = {}
    for device in ("cpu", "cuda"):
        trunk, head = build_network(NetworkConfig(trunk="compact", fc_dim=32))
        head.add_classifier(len(ds.classes) + 1)
        sampler = CropSampler(ds, background_per_image=2)
        results[device] = pretrain(trunk, head, (6, 3, 2, 1), sampler, sampler, sizes=(48,), epochs=2,
                                   batch_size=16, lr=1e-3, progress=False, image_scales=(96, 160), device=device)
        assert all(p.device.type == "cpu" for p in list(trunk.parameters()) + list(head.parameters()))
    assert abs(results["cuda"].history[0]["loss"] - results["cpu"].history[0]["loss"]) < 0.05
    assert 0.0 <= results["cuda"].val_image_accuracy <= 1.0
