"""Fault injection for the fault-tolerance tests (no torch).

``SPPDET_KILL_AT="stage:N"`` in the environment makes the process kill itself with SIGKILL
(``kill -9``: no clean-up, no ``finally``, no atexit) when ``stage`` reaches item ``N``
(0-based: image, iteration or epoch). The tests use it to interrupt a tool at an exact
point and check that the rerun resumes to the same outputs as an uninterrupted run.
Unset, it costs one dictionary lookup per call.

Stages: ``proposals`` (images written), ``positives`` and ``mining`` (training images),
``finetune`` (iterations), ``pretrain`` (epochs), ``pretrain_run`` (the runs of one
``tools/pretrain.py --compare``), ``test`` (test images).
"""
from __future__ import annotations

import os
import signal

__all__ = ["kill_point", "KILL_ENV"]

KILL_ENV = "SPPDET_KILL_AT"


def kill_point(stage: str, index: int) -> None:
    """SIGKILL this process if ``SPPDET_KILL_AT`` is ``f"{stage}:{index}"``."""
    target = os.environ.get(KILL_ENV)
    if target and target == f"{stage}:{index}":
        os.kill(os.getpid(), signal.SIGKILL)
