"""What detect/, proposals/ and svm/ share, below all three: numpy only, no torch.

* :mod:`sppcore.boxes`: box conventions, conversions, IoU, NMS, box-regression targets;
* :mod:`sppcore.matcher`: the one rule that labels windows by IoU with the ground truth
  (foreground / background / ignored), for every sampler of the project;
* :mod:`sppcore.errors`: the error types of bad user input;
* :mod:`sppcore.fileio`: atomic writes, stable hashes, keyed cache entries, sealed
  directories;
* :mod:`sppcore.faults`: the kill points of the fault-injection tests;
* :mod:`sppcore.images`: reading an image file as RGB uint8;
* :mod:`sppcore.kernels`: torch's CPU kernels capped at AVX2 (the same figures on every
  x86 machine), set before torch is imported.

Dependencies point one way: ``sppcore`` imports nothing from ``detect``, ``proposals``
or ``svm``; ``proposals`` and ``svm`` import ``sppcore`` and never ``detect``; ``detect``
may import all three (``tests/test_dependency_direction.py`` checks this).
"""
