import numpy as np
import torch

from detect.boxes import box_iou
from detect.config import NetworkConfig
from detect.pretrain import BACKGROUND_IOU, CropSampler, pretrain
from detect.trunks import build_network
from detect.voc import VOCDataset


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
    assert 0.0 <= result.val_accuracy <= 1.0
    assert all(np.isfinite(r["loss"]) for r in result.history)
