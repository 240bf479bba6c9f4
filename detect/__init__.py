"""SPP-net / R-CNN detection: trunks, SPP layer, features, detector, datasets, evaluation.

Kept import-light on purpose: importing ``detect`` (or its numpy-only modules such as
``detect.voc``, ``detect.config``, ``detect.evaluation``) does not import torch.
``detect.Detector`` (:class:`detect.detector_api.Detector`) is imported on first use.
Importing it caps torch's CPU kernels at AVX2 where torch is not imported yet
(:mod:`sppcore.kernels`).
"""

import os as _os
import sys as _sys

from sppcore.kernels import pin_cpu_kernels as _pin_cpu_kernels

# before torch is imported: the same CPU kernels on every x86 machine, so that figures
# measured on one come out on another (sppcore/kernels.py; SPPDET_CPU_KERNELS=native opts out)
try:
    _pin_cpu_kernels()
except ValueError as _e:  # a bad SPPDET_CPU_KERNELS: one line and exit 2, as the tools do
    print(f"{_os.path.basename(_sys.argv[0]) or 'sppdet'}: error: {_e}", file=_sys.stderr)
    raise SystemExit(2) from None

__all__ = ["Detector"]


def __getattr__(name):
    # PEP 562: the detector (and with it torch) loads only when asked for
    if name == "Detector":
        from detect.detector_api import Detector

        return Detector
    raise AttributeError(f"module 'detect' has no attribute {name!r}")
