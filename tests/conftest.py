"""Shared fixtures: a tiny generated VOC-format dataset, made once per test session."""
import pytest

TINY_TRAINVAL = 10
TINY_TEST = 6


@pytest.fixture(scope="session")
def synthetic_voc(tmp_path_factory) -> str:
    """Path of the VOC2007 root of a tiny generated dataset (seed 0)."""
    from detect.synthetic import generate_synthetic_voc

    out = tmp_path_factory.mktemp("synthetic")
    return generate_synthetic_voc(str(out), seed=0, num_trainval=TINY_TRAINVAL, num_test=TINY_TEST, progress=False)
