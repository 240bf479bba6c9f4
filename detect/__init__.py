"""SPP-net / R-CNN detection: trunks, SPP layer, features, detector, datasets, evaluation.

Kept import-light on purpose: importing ``detect`` (or its numpy-only modules such as
``detect.boxes``, ``detect.fileio``, ``detect.config``) does not import torch.
"""
