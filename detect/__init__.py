"""SPP-net / R-CNN detection: trunks, SPP layer, features, detector, datasets, evaluation.

Kept import-light on purpose: importing ``detect`` (or its numpy-only modules such as
``detect.voc``, ``detect.config``, ``detect.evaluation``) does not import torch.
``detect.Detector`` (:class:`detect.detector_api.Detector`) is imported on first use.
"""

__all__ = ["Detector"]


def __getattr__(name):
    # PEP 562: the detector (and with it torch) loads only when asked for
    if name == "Detector":
        from detect.detector_api import Detector

        return Detector
    raise AttributeError(f"module 'detect' has no attribute {name!r}")
