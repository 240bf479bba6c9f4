"""Shared fixtures, made once per test session (per xdist worker): a tiny generated
VOC-format dataset and a cheap SPP-net model trained on it (tooling.FAST_MODEL)."""
import pytest

# before any test module imports torch: `import detect` caps torch's CPU kernels at AVX2
# (sppcore/kernels.py), so that tests compute as the tools do on every machine (the
# shipped pretrained network, keyed by the kernels, is then the one the tests find)
import detect  # noqa: F401,E402  (isort: skip)
from tooling import fast_overrides, run_tool

TINY_TRAINVAL = 10
TINY_TEST = 6


@pytest.fixture(scope="session")
def synthetic_voc(tmp_path_factory) -> str:
    """Path of the VOC2007 root of a tiny generated dataset (seed 0)."""
    from detect.synthetic import generate_synthetic_voc

    out = tmp_path_factory.mktemp("synthetic")
    return generate_synthetic_voc(str(out), seed=0, num_trainval=TINY_TRAINVAL, num_test=TINY_TEST, progress=False)


@pytest.fixture(scope="session")
def tiny_model(synthetic_voc, tmp_path_factory):
    """``(out, model_dir, overrides)``: the cheap model trained by ``tools/train_svm.py`` on
    the tiny dataset's trainval images; caches and outputs under ``out``. Tests that use
    it leave the model directory as it is (copy it to change it)."""
    out = tmp_path_factory.mktemp("tiny_model")
    overrides = fast_overrides(synthetic_voc, out)
    model = str(out / "model")
    assert run_tool("train_svm", ["--set", *overrides, "--out", model, "--quiet"]) == 0
    return out, model, overrides
