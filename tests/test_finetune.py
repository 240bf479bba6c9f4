import numpy as np
import torch

from detect.config import FinetuneConfig, NetworkConfig
import pytest

from detect.features import RCNNFeatures, SPPFeatures
from detect.finetune import finetune_head, label_windows
from detect.voc import VOCDataset
from detect.trunks import build_network
from tooling import record_threads


def test_label_windows_intervals():
    gt = np.array([[0, 0, 10, 10], [50, 50, 70, 70]], np.float32)
    boxes = np.array([
        [0, 0, 10, 20],     # IoU 0.5 with gt0 -> class 3 + 1
        [0, 0, 10, 21],     # 100 / 210 < 0.5 -> background
        [0, 0, 10, 100],    # IoU 0.1 exactly -> background (interval is closed below)
        [0, 0, 10, 101],    # below 0.1 -> unused
        [50, 50, 70, 70],   # gt1 -> class 5 + 1
    ], np.float32)
    np.testing.assert_array_equal(label_windows(boxes, gt, np.array([3, 5]), 0.5, 0.1), [4, 0, 0, -1, 6])
    assert (label_windows(boxes, np.zeros((0, 4)), np.zeros(0, np.int64), 0.5, 0.1) == -1).all()


def jittered_proposals(ds, n, seed):
    """Per image: ``n`` ground-truth boxes jittered by 8 px, and the ground truth itself."""
    rng = np.random.default_rng(seed)
    props = {}
    for i in ds.image_ids:
        a = ds.annotation(i)
        jitter = a.boxes[rng.integers(0, len(a.boxes), n)] + rng.normal(0, 8, (n, 4)).astype(np.float32)
        props[i] = np.concatenate([jitter, a.boxes])
    return props


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("method, device", [("spp", "cpu"), ("rcnn", "cpu"),
                                            pytest.param("spp", "cuda", marks=CUDA),
                                            pytest.param("rcnn", "cuda", marks=CUDA)])
def test_finetune_updates_only_the_head(synthetic_voc, method, device):
    ds = VOCDataset(synthetic_voc, "trainval")
    trunk, head = build_network(NetworkConfig(trunk="compact", fc_dim=32))
    head.add_classifier(len(ds.classes) + 1)
    if method == "spp":
        spp = SPPFeatures(trunk, head, scales=(200,), device=device)
        maps = {i: spp.compute_maps(ds.load_image(i)) for i in ds.image_ids}

        def pool_fn(image_id, windows):
            pooled, inverse = spp.pool(maps[image_id], windows)
            return pooled[torch.from_numpy(inverse).to(pooled.device)]
    else:
        rcnn = RCNNFeatures(trunk, head, crop_size=64, context_pad=4, device=device)

        def pool_fn(image_id, windows):
            pooled, inverse = rcnn.pool(ds.load_image(image_id), windows)
            assert pooled.shape == (len(np.unique(windows, axis=0)), head.in_dim)
            return pooled[torch.from_numpy(inverse).to(pooled.device)]
    props = jittered_proposals(ds, 40, seed=0)
    trunk_before = [p.detach().clone() for p in trunk.parameters()]
    fc6_before = head.fc6.weight.detach().clone()
    report = finetune_head(head, pool_fn, ds, props,
                           FinetuneConfig(iterations=12, batch_size=16, lr=1e-3), progress=False)
    assert report["iterations"] == 12 and np.isfinite(report["final_loss"])
    assert not torch.equal(fc6_before, head.fc6.weight)
    assert all(torch.equal(a, b) for a, b in zip(trunk_before, trunk.parameters()))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_interrupted_finetuning_resumes_to_the_same_weights(synthetic_voc, tmp_path, device):
    ds = VOCDataset(synthetic_voc, "trainval")
    props = jittered_proposals(ds, 30, seed=1)
    cfg = FinetuneConfig(iterations=12, batch_size=16, lr=1e-3)

    def setup():
        trunk, head = build_network(NetworkConfig(trunk="compact", fc_dim=32, init_seed=3))
        head.add_classifier(len(ds.classes) + 1)
        spp = SPPFeatures(trunk, head, scales=(160,), device=device)
        maps = {i: spp.compute_maps(ds.load_image(i)) for i in ds.image_ids}
        calls = {"n": 0}

        def pool_fn(image_id, windows):
            calls["n"] += 1
            if calls.get("fail_at") == calls["n"]:
                raise KeyboardInterrupt
            pooled, inverse = spp.pool(maps[image_id], windows)
            return pooled[torch.from_numpy(inverse).to(pooled.device)]

        return head, pool_fn, calls

    head, pool_fn, _ = setup()
    whole = finetune_head(head, pool_fn, ds, props, cfg, progress=False)
    expected = {k: v.clone() for k, v in head.state_dict().items()}

    ckpt = str(tmp_path / "state.pt")
    head, pool_fn, calls = setup()
    calls["fail_at"] = 2 * 9 + 1  # two images per iteration: dies in iteration 9
    with pytest.raises(KeyboardInterrupt):
        finetune_head(head, pool_fn, ds, props, cfg, progress=False, checkpoint=ckpt, checkpoint_every=4, key="k")
    assert torch.load(ckpt, weights_only=True)["iteration"] == 8
    head, pool_fn, calls = setup()  # a new process: fresh weights, resumed from the file
    resumed = finetune_head(head, pool_fn, ds, props, cfg, progress=False, checkpoint=ckpt, checkpoint_every=4, key="k")
    assert calls["n"] == 2 * (12 - 8)
    for k, v in head.state_dict().items():
        assert torch.equal(v, expected[k]), k
    assert resumed["history"] == whole["history"] and resumed["final_loss"] == whole["final_loss"]
    # another key: the checkpoint is not used
    head, pool_fn, calls = setup()
    finetune_head(head, pool_fn, ds, props, cfg, progress=False, checkpoint=ckpt, checkpoint_every=4, key="other")
    assert calls["n"] == 2 * 12


def test_finetuned_network_is_reused_only_for_the_same_key(synthetic_voc, tmp_path, caplog):
    """tools/finetune_fc.py (pipeline.run_finetuning): a sealed fine-tuning of the same key
    is reused; other settings, or a network file edited since, fine-tune again."""
    import logging

    from detect.config import load_config
    from detect.pipeline import run_finetuning

    base = [f"data.root={synthetic_voc}", f"cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'out'}",
            "network.fc_dim=32", "network.weights=random", "features.scales=[160]", "proposals.max_boxes=100",
            "finetune.iterations=3", "finetune.batch_size=8"]
    out = str(tmp_path / "ft" / "network.npz")
    caplog.set_level(logging.INFO, logger="detect.pipeline")
    _, first = run_finetuning(load_config("default", base), out, progress=False)
    with open(out, "rb") as f:
        weights = f.read()
    caplog.clear()
    _, again = run_finetuning(load_config("default", base), out, progress=False)
    assert "fine-tuning: reusing" in caplog.text and again == first
    # other settings: trained again, to other weights
    caplog.clear()
    _, other = run_finetuning(load_config("default", base[:-2] + ["finetune.iterations=4", "finetune.batch_size=8"]),
                              out, progress=False)
    assert "reusing" not in caplog.text and other["iterations"] == 4
    # back to the first settings, then the file is edited: not reused
    run_finetuning(load_config("default", base), out, progress=False)
    with open(out, "rb") as f:
        assert f.read() == weights  # deterministic: the same network as the first run
    with open(out, "ab") as f:
        f.write(b"\0")
    caplog.clear()
    run_finetuning(load_config("default", base), out, progress=False)
    assert "reusing" not in caplog.text
    with open(out, "rb") as f:
        assert f.read() == weights


def test_finetuning_runs_on_its_own_threads_and_is_keyed_by_them(synthetic_voc, tmp_path, monkeypatch, caplog):
    """The fine-tuned layers depend on torch's thread count: fine-tuning runs on
    finetune.threads (restored after), and one made with other threads is not reused."""
    import logging

    import detect.finetune as finetune_module
    from detect.config import load_config
    from detect.pipeline import run_finetuning

    base = [f"data.root={synthetic_voc}", f"cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'out'}",
            "network.fc_dim=32", "network.weights=random", "features.scales=[160]", "proposals.max_boxes=100",
            "finetune.iterations=2", "finetune.batch_size=8"]
    seen = record_threads(monkeypatch, finetune_module, "finetune_head")
    before = torch.get_num_threads()
    out = str(tmp_path / "ft" / "network.npz")
    cfg = load_config("default", base)
    assert cfg.finetune.threads == 2
    run_finetuning(cfg, out, progress=False)
    assert seen == [2] and torch.get_num_threads() == before
    caplog.set_level(logging.INFO, logger="detect.pipeline")
    run_finetuning(load_config("default", base + ["finetune.threads=1"]), out, progress=False)
    assert "reusing" not in caplog.text and seen == [2, 1] and torch.get_num_threads() == before
