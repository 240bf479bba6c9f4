"""Which instruction set PyTorch's CPU float kernels use: the same on every x86 machine.

PyTorch picks its CPU kernels by the widest instruction set the processor has (AVX2,
AVX-512, ...), and kernels of different widths sum in different orders. The results
differ in the last bits, and a network pretrained for minutes drifts from there: the
built-in default's quickstart gives mAP 0.723 / 0.750 / 0.593 (SPP-net 1 scale, 5 scales,
R-CNN) with AVX2 kernels and 0.718 / 0.720 / 0.566 with AVX-512 kernels on the same
processor, the same code and the same seeds. So that figures measured on one machine
come out as closely as they can on another, :func:`pin_cpu_kernels` caps the kernels at
AVX2 (the widest set that almost every x86-64 processor of the last ten years has) before
torch is imported. The cap fixes the instruction set, not every order of summation (the
libraries also choose blockings by the processor): pretrained from scratch on an Intel
Xeon with AVX2 kernels, the same default gives 0.732 / 0.741 / 0.623; hence the shipped
pretrained network (``pretrain.shipped``).
It costs about 7% of speed on an AVX-512 machine; ``SPPDET_CPU_KERNELS=native`` leaves
PyTorch's own choice.

``import detect`` calls it, so the tools, the benches and a notebook that imports
``detect`` before ``torch`` compute alike. Where torch was imported first, the processor
lacks AVX2 or is not x86, nothing is changed; what was used is recorded with the results
(``cpu_kernels`` in a test's ``results.json``, torch's own word for it).
"""
from __future__ import annotations

import os
import platform
import sys

# what SPPDET_CPU_KERNELS may say
PINNED = "avx2"
NATIVE = "native"
CHOICE_VARIABLE = "SPPDET_CPU_KERNELS"
# the variables each library reads (once, when it first dispatches a kernel): ATen's own
# vectorised kernels, oneDNN (convolutions), MKL (matrix products)
PIN_ENVIRONMENT = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "DNNL_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}


def cpu_has_avx2(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """True on an x86-64 processor whose flags list AVX2 (read from ``/proc/cpuinfo``;
    False where it cannot be read: pinning is then left alone)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return "avx2" in line.split(":", 1)[-1].split()
    except OSError:
        return False
    return False


def pin_cpu_kernels(environ=None, modules=None, cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """Cap PyTorch's CPU kernels at AVX2 (module docstring); True when the variables were
    set. Variables the user set already are kept. ``SPPDET_CPU_KERNELS`` other than
    ``avx2`` / ``native`` is an error (the variable and the value in one line)."""
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    choice = environ.get(CHOICE_VARIABLE, PINNED).strip().lower()
    if choice not in (PINNED, NATIVE):
        raise ValueError(f"{CHOICE_VARIABLE}={environ[CHOICE_VARIABLE]!r}: expected {PINNED} or {NATIVE}")
    if choice == NATIVE or "torch" in modules or not cpu_has_avx2(cpuinfo_path):
        return False
    for name, value in PIN_ENVIRONMENT.items():
        environ.setdefault(name, value)
    return True

