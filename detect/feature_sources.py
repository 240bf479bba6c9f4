"""Window features for the tools: the network built from a config, the SPP / R-CNN
extractor, and for training a disk cache of conv5 maps.

Training reads every training image's windows twice (positives, then the mining pass).
SPP-net's conv layers are frozen, so each image's conv5 maps are computed once and cached
in float16 (``<cache_dir>/features/conv5-<trunk>-<key>/<image_id>.npz``, keyed by the
trunk's weights, the scales, the size cap and where the conv layers ran
(:func:`detect.features.layer_numerics`; they run in float32 whatever
``features.precision``), each entry by its image file's content; see
:class:`sppcore.fileio.KeyedEntries`), and windows are pooled from them on demand. The
extractor rounds conv5 to float16 whether the maps come from this cache or not, so training
and testing see the same values: this is how a 1-scale VOC07 trainval run needs about 6 GB of disk for its features
(AlexNet, s = 688) where per-window fc7 features would take 82 GB. R-CNN has nothing to share between windows and recomputes.
"""
from __future__ import annotations

import hashlib
import logging
import os


from detect.config import Config, config_to_dict
from sppcore.fileio import KeyedEntries, file_digest, keyed_directory

__all__ = ["WindowFeatures", "network_digest"]

log = logging.getLogger(__name__)

# 2: entries keyed by the image's content
CONV_CACHE_VERSION = 2


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
        trunk, head = build_network(net_cfg)
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

    def _conv_entries(self) -> KeyedEntries:
        from detect import features as features_module

        f = self.cfg.features
        key = {"version": CONV_CACHE_VERSION, "trunk": self.cfg.network.trunk, "weights": network_digest(self.trunk),
               "scales": list(f.scales), "max_side": f.max_side,
               "numerics": features_module.layer_numerics(self.extractor.device)}
        directory = keyed_directory(self.cache_root, f"conv5-{self.cfg.network.trunk}", key, describe={
            **key, "network": config_to_dict(self.cfg.network), "dtype": "float16"})
        return KeyedEntries(directory, key, what="conv5 cache entry")

    def source_fn(self, dataset):
        """``fn(image_id) -> source`` the extractor pools windows from
        (:meth:`detect.features.WindowExtractor.image_source`). A cacheable source (SPP-net's
        conv5 maps) is read from and written to the float16 cache, each entry keyed by its
        image's content; the last image's source is kept in memory (both training passes
        ask for it repeatedly)."""
        extractor = self.extractor
        if not extractor.source_is_cacheable or self.cache_root is None:
            return lambda image_id: extractor.image_source(dataset.load_image(image_id))
        from detect.features import ConvMaps

        entries = self._conv_entries()
        last = {"id": None, "maps": None}

        def maps_fn(image_id):
            if last["id"] != image_id:
                digest = file_digest(dataset.image_path(image_id))
                arrays = entries.load(image_id, digest)
                if arrays is not None:
                    maps = ConvMaps.from_arrays(arrays)
                else:
                    maps = extractor.image_source(dataset.load_image(image_id))
                    entries.save(image_id, digest, **maps.to_arrays())
                last["id"], last["maps"] = image_id, maps
            return last["maps"]

        return maps_fn

    def fill_conv_cache(self, dataset, image_ids, progress: bool = True) -> None:
        """Compute the conv5 cache entries of ``image_ids`` that are missing (an extractor
        whose source is cacheable, with a cache; nothing for R-CNN, which has no per-image
        work to share): the part of training that processes run in parallel
        (:mod:`detect.distributed`)."""
        from tqdm import tqdm

        if not self.extractor.source_is_cacheable or self.cache_root is None:
            return
        source = self.source_fn(dataset)
        for image_id in tqdm(image_ids, desc="conv5", disable=not progress):
            source(image_id)

    def feature_fn(self, dataset):
        """``fn(image_id, boxes, layers) -> {layer: [N, D]}`` for :mod:`detect.training`."""
        source = self.source_fn(dataset)

        def fn(image_id, boxes, layers):
            return self.extractor.features_from_source(source(image_id), boxes, layers)

        return fn
