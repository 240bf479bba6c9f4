"""Window features for the tools: the network built from a config, the SPP / R-CNN
extractor, and for training a disk cache of conv5 maps.

Training reads every training image's windows twice (positives, then the mining pass).
SPP-net's conv layers are frozen, so each image's conv5 maps are computed once and cached
in float16 (``<cache_dir>/features/conv5-<key>/<image_id>.npz``, keyed by the trunk's
weights, the scales, the size cap and the image file), and windows are pooled from them on
demand: this is how a 1-scale VOC07 trainval run needs about 6 GB of disk for its features
(AlexNet, s = 688) where per-window fc7 features would take 82 GB. R-CNN has nothing to share between windows and recomputes.
"""
from __future__ import annotations

import hashlib
import logging
import os

import numpy as np

from detect.config import Config, config_to_dict
from detect.fileio import atomic_save_npz, atomic_write_json, load_npz, stable_hash

__all__ = ["WindowFeatures", "network_digest"]

log = logging.getLogger(__name__)

CONV_CACHE_VERSION = 1


def network_digest(trunk, head=None) -> str:
    """A hash of the weights (trunk, and head when given)."""
    h = hashlib.sha256()
    modules = [trunk] + ([head] if head is not None else [])
    for m in modules:
        for k, v in m.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class WindowFeatures:
    """The configured extractor plus the training-time conv5 cache."""

    def __init__(self, cfg: Config, trunk, head, cache_root: str | None = None, weights_file: str | None = None):
        from detect.features import build_features

        self.cfg = cfg
        self.trunk, self.head = trunk, head
        self.extractor = build_features(cfg, trunk, head)
        self.cache_root = cache_root
        self.weights_file = weights_file

    @classmethod
    def from_config(cls, cfg: Config, cache_root: str | None = None, network_file: str | None = None) -> "WindowFeatures":
        """Build the network from ``network_file`` (a model's saved network) or from
        ``cfg.network``."""
        import dataclasses

        from detect.trunks import build_network

        net_cfg = cfg.network
        if network_file:
            net_cfg = dataclasses.replace(net_cfg, weights=network_file)
        trunk, head = build_network(net_cfg, cfg.features.levels)
        return cls(cfg, trunk, head, cache_root, weights_file=network_file)

    def extract(self, image, boxes, layers):
        """``({layer: float32 [N, D]}, {stage: seconds})`` for one image."""
        return self.extractor.extract(image, boxes, layers)

    def save_network_if_needed(self, directory: str) -> str | None:
        """Save the network into a model directory unless the config's ImageNet weights
        reproduce it; returns the saved path (or None)."""
        if self.cfg.network.weights == "imagenet" and self.weights_file is None:
            return None
        from detect.trunks import save_network

        return save_network(self.trunk, self.head, os.path.join(directory, "network.npz"),
                            extra={"source": self.cfg.network.weights})

    # ----------------------------------------------------------------------- training

    def _conv_cache_dir(self) -> str:
        f = self.cfg.features
        key = stable_hash({
            "version": CONV_CACHE_VERSION,
            "trunk": self.cfg.network.trunk,
            "weights": network_digest(self.trunk),
            "scales": list(f.scales),
            "max_side": f.max_side,
        })
        directory = os.path.join(self.cache_root, f"conv5-{self.cfg.network.trunk}-{key}")
        if not os.path.isdir(directory):
            os.makedirs(directory, exist_ok=True)
            atomic_write_json(os.path.join(directory, "manifest.json"), {
                "version": CONV_CACHE_VERSION, "network": config_to_dict(self.cfg.network),
                "scales": list(f.scales), "max_side": f.max_side, "dtype": "float16"})
        return directory

    def conv_maps_fn(self, dataset):
        """``fn(image_id) -> ConvMaps`` reading and filling the float16 conv5 cache (the
        last image is kept in memory: both training passes ask for it repeatedly)."""
        from detect.features import ConvMaps

        directory = self._conv_cache_dir()
        spp = self.extractor
        last = {"id": None, "maps": None}

        def maps_fn(image_id):
            if last["id"] != image_id:
                path = os.path.join(directory, f"{image_id}.npz")
                st = os.stat(dataset.image_path(image_id))
                signature = np.array([st.st_size, st.st_mtime_ns], dtype=np.int64)
                maps = None
                if os.path.isfile(path):
                    arrays = load_npz(path)
                    if np.array_equal(arrays.get("signature"), signature):
                        maps = ConvMaps.from_arrays(arrays)
                if maps is None:
                    maps = spp.compute_maps(dataset.load_image(image_id))
                    atomic_save_npz(path, signature=signature, **maps.to_arrays())
                    # the same float16 rounding whether the maps were cached or not
                    maps = ConvMaps.from_arrays(maps.to_arrays())
                last["id"], last["maps"] = image_id, maps
            return last["maps"]

        return maps_fn

    def feature_fn(self, dataset):
        """``fn(image_id, boxes, layers) -> {layer: [N, D]}`` for :mod:`detect.training`."""
        from detect.features import SPPFeatures

        if not isinstance(self.extractor, SPPFeatures) or self.cache_root is None:
            def rcnn_fn(image_id, boxes, layers):
                return self.extractor.extract(dataset.load_image(image_id), boxes, layers)[0]

            return rcnn_fn

        maps_fn = self.conv_maps_fn(dataset)

        def spp_fn(image_id, boxes, layers):
            return self.extractor.features_from_maps(maps_fn(image_id), boxes, layers)

        return spp_fn
