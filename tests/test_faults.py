"""The fault suite: no stale or half-written result is ever reported.

Each resumable stage is killed with SIGKILL at a chosen point (``SPPDET_KILL_AT``, see
sppcore/faults.py) and run again: the outputs equal an uninterrupted run's. Every kind of
cache and model file is truncated: it is recomputed with a warning, or refused in one line.
Every way settings or inputs can change under a reused output is tried: the reported
numbers equal a fresh run's.

About 8 minutes on 2 cores (each case trains or tests in a child process): marked slow,
run by ``make test-slow`` and CI.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from sppcore.faults import KILL_ENV
from sppcore.fileio import load_npz
from tooling import FAST_MODEL, ROOT, TOOLS, run_tool

pytestmark = pytest.mark.slow


def killed(name, argv, at):
    """Run a tool in a child process that SIGKILLs itself at ``at`` ("stage:N")."""
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    env[KILL_ENV] = at
    proc = subprocess.run([sys.executable, os.path.join(TOOLS, f"{name}.py"), *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, (proc.returncode, proc.stderr[-2000:])


def truncate(path, keep=0.5):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])


def read_json(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def world(synthetic_voc, tmp_path_factory):
    """A private copy of the tiny dataset (tests edit it), one shared cache, and a reference
    model and test run."""
    out = tmp_path_factory.mktemp("faults")
    data = str(out / "VOC2007")
    shutil.copytree(synthetic_voc, data)
    overrides = [f"data.root={data}", f"cache_dir={out / 'cache'}", f"output_dir={out / 'output'}",
                 *FAST_MODEL]
    model = str(out / "model")
    assert run_tool("train_svm", ["--set", *overrides, "--out", model, "--quiet"]) == 0
    assert run_tool("test_net", ["--model", model, "--out", str(out / "test"), "--quiet"]) == 0
    return {"out": out, "data": data, "overrides": overrides, "model": model,
            "results": read_json(out / "test" / "results.json"), "svm": load_npz(os.path.join(model, "svm.npz"))}


def train_fresh(world, name, extra=()):
    """A model trained from scratch (its own cache) with ``extra`` overrides."""
    out = world["out"] / name
    overrides = world["overrides"] + [f"cache_dir={out / 'cache'}", *extra]
    assert run_tool("train_svm", ["--set", *overrides, "--out", str(out / "model"), "--quiet"]) == 0
    return str(out / "model")


# ----------------------------------------------------------------------------- kill -9


@pytest.mark.parametrize("at", ["positives:3", "mining:4"])
def test_training_killed_resumes_to_the_same_svms(world, at):
    model = str(world["out"] / f"killed-{at.replace(':', '')}")
    argv = ["--set", *world["overrides"], "--out", model, "--quiet"]
    killed("train_svm", argv, at)
    assert run_tool("train_svm", argv) == 0
    svm = load_npz(os.path.join(model, "svm.npz"))
    np.testing.assert_allclose(svm["weights"], world["svm"]["weights"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(svm["bias"], world["svm"]["bias"], rtol=1e-5, atol=1e-6)


def test_test_net_killed_resumes_to_the_same_results(world):
    out = str(world["out"] / "test-killed")
    argv = ["--model", world["model"], "--out", out, "--quiet"]
    killed("test_net", argv, "test:3")
    assert len(os.listdir(os.path.join(out, "detections"))) == 3
    assert run_tool("test_net", argv) == 0
    res = read_json(os.path.join(out, "results.json"))
    assert res["map"] == world["results"]["map"] and res["ap_per_class"] == world["results"]["ap_per_class"]
    a, b = load_npz(os.path.join(out, "detections.npz")), load_npz(world["out"] / "test" / "detections.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_proposals_killed_resume_and_two_processes_share_a_cache(world, tmp_path):
    from detect.config import load_config
    from detect.stages import build_proposal_store, open_dataset

    argv = ["--set", *world["overrides"], f"cache_dir={tmp_path / 'cache'}", "--image-set", "trainval",
            "--workers", "1"]
    killed("compute_proposals", argv, "proposals:2")
    assert run_tool("compute_proposals", argv) == 0
    # two processes filling one fresh cache at once
    argv2 = ["--set", *world["overrides"], f"cache_dir={tmp_path / 'cache2'}", "--image-set", "trainval",
             "--workers", "1"]
    procs = [subprocess.Popen([sys.executable, os.path.join(TOOLS, "compute_proposals.py"), *argv2], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    cfg = load_config(None, world["overrides"])
    ds = open_dataset(cfg, "trainval")
    reference = build_proposal_store(cfg, ds, progress=False)  # the shared cache, filled by the fixture
    for cache in ("cache", "cache2"):
        cfg2 = load_config(None, world["overrides"] + [f"cache_dir={tmp_path / cache}"])
        store = build_proposal_store(cfg2, ds, progress=False)
        for i in ds.image_ids:
            np.testing.assert_array_equal(store[i], reference[i])


def test_finetuning_killed_resumes_to_the_same_network(world):
    from detect.trunks import load_network

    base = ["--set", *world["overrides"], "finetune.iterations=6", "finetune.batch_size=16", "--quiet"]
    ref, run = str(world["out"] / "ft-ref" / "network.npz"), str(world["out"] / "ft-killed" / "network.npz")
    assert run_tool("finetune_fc", base + ["--out", ref]) == 0
    killed("finetune_fc", base + ["--out", run], "finetune:3")
    assert run_tool("finetune_fc", base + ["--out", run]) == 0
    a, b = load_npz(ref), load_npz(run)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    load_network(run)


def test_pretraining_killed_with_other_settings_is_never_reused(world):
    """A run with other settings that dies after writing its network must not leave that
    network to be reused by the next run with the first settings."""
    net = str(world["out"] / "pretrain" / "network.npz")
    first = ["--set", *world["overrides"], f"pretrain.root={world['data']}", "pretrain.train_set=trainval",
             "pretrain.val_set=test", "pretrain.sizes=[48,40]", "pretrain.epochs=1", "pretrain.batch_size=16",
             f"pretrain.out={net}", "--quiet"]
    assert run_tool("pretrain", first) == 0
    reference = load_npz(net)
    other = [a if not a.startswith("pretrain.epochs=") else "pretrain.epochs=2" for a in first]
    killed("pretrain", other + ["--compare"], "pretrain_run:1")  # after the first run's network is written
    assert not np.array_equal(load_npz(net)["trunk.features.0.weight"], reference["trunk.features.0.weight"])
    assert run_tool("pretrain", first) == 0
    again = load_npz(net)
    for k in reference:
        np.testing.assert_array_equal(again[k], reference[k], err_msg=k)


# ----------------------------------------------------------------------------- stale settings


def test_test_net_with_other_settings_into_the_same_out_recomputes(world):
    out, fresh = str(world["out"] / "test-same"), str(world["out"] / "test-fresh")
    argv = ["--model", world["model"], "--quiet"]
    assert run_tool("test_net", argv + ["--out", out]) == 0
    changed = ["--set", "features.scales=[150,600]", "test.nms_iou=0.9"]
    assert run_tool("test_net", argv + ["--out", out] + changed) == 0
    assert run_tool("test_net", argv + ["--out", fresh] + changed) == 0
    again, new = read_json(os.path.join(out, "results.json")), read_json(os.path.join(fresh, "results.json"))
    assert new["map"] != world["results"]["map"]  # the settings do change the result
    assert again["map"] == new["map"] and again["ap_per_class"] == new["ap_per_class"]


def test_features_computed_elsewhere_are_never_reused(world, tmp_path, monkeypatch):
    """Where the network layers ran (detect.features.layer_numerics: the CPU kernels'
    instruction set, TF32 on a GPU) keys the conv5 cache, the model and the detections: a
    run where they differ recomputes all three, a run where they match reuses them."""
    import glob

    import detect.features as features_module
    from detect.detector_api import Detector
    from detect.model import sealed_model_key

    model, out = str(tmp_path / "model"), str(tmp_path / "test")
    shutil.copytree(world["model"], model)
    calls = []
    detect_with_timings = Detector.detect_with_timings
    monkeypatch.setattr(Detector, "detect_with_timings", lambda self, *a: calls.append(1) or detect_with_timings(self, *a))
    conv5 = lambda: len(glob.glob(str(world["out"] / "cache" / "features" / "conv5-*")))  # noqa: E731
    before, key = conv5(), sealed_model_key(model)
    argv = ["--set", *world["overrides"], "--out", model, "--quiet"]
    assert run_tool("train_svm", argv) == 0 and sealed_model_key(model) == key and conv5() == before  # up to date
    assert run_tool("test_net", ["--model", model, "--out", out, "--quiet"]) == 0
    images = len(calls)
    assert images > 0 and run_tool("test_net", ["--model", model, "--out", out, "--quiet"]) == 0
    assert len(calls) == images  # every detection reused
    here = features_module.layer_numerics
    monkeypatch.setattr(features_module, "layer_numerics", lambda device: {**here(device), "cpu_kernels": "OTHER"})
    assert run_tool("train_svm", argv) == 0
    assert sealed_model_key(model) != key and conv5() == before + 1  # retrained, from conv5 maps of its own
    assert run_tool("test_net", ["--model", model, "--out", out, "--quiet"]) == 0
    assert len(calls) == 2 * images  # detected afresh


def test_retrain_killed_keeps_the_old_model_and_a_finished_one_is_tested_afresh(world, tmp_path):
    from detect.model import load_model

    model = str(tmp_path / "model")
    shutil.copytree(world["model"], model)
    old = load_model(model)
    argv = ["--set", *world["overrides"], "svm.C=0.01", "--out", model, "--quiet"]
    killed("train_svm", argv, "mining:2")
    kept = load_model(model)  # the interrupted retrain left the previous model whole
    assert kept.digest == old.digest and kept.config == old.config
    assert run_tool("train_svm", argv) == 0
    new = load_model(model)
    assert new.digest != old.digest and new.config.svm.C == 0.01
    assert run_tool("test_net", ["--model", model, "--quiet"]) == 0  # default --out, next to the model
    res = read_json(tmp_path / "test_spp" / "results.json")
    assert res["model_digest"] == new.digest
    fresh = train_fresh(world, "c1", ["svm.C=0.01"])
    assert run_tool("test_net", ["--model", fresh, "--out", str(tmp_path / "fresh"), "--quiet"]) == 0
    assert res["map"] == read_json(tmp_path / "fresh" / "results.json")["map"]
    # retraining with the same settings again is a no-op: the sealed model is up to date
    assert run_tool("train_svm", argv) == 0 and load_model(model).digest == new.digest


def test_edited_annotation_retrains_from_fresh_positives(world, tmp_path):
    import re

    data = str(tmp_path / "VOC2007")
    shutil.copytree(world["data"], data)
    overrides = [a if not a.startswith("data.root=") else f"data.root={data}" for a in world["overrides"]]
    model = str(tmp_path / "model")
    argv = ["--set", *overrides, "--out", model, "--quiet"]
    assert run_tool("train_svm", argv) == 0
    before = read_json(os.path.join(model, "train_report.json"))["num_positives"]
    first_id = open(os.path.join(data, "ImageSets", "Main", "trainval.txt")).read().split()[0]
    xml_path = os.path.join(data, "Annotations", first_id + ".xml")
    xml = open(xml_path).read()
    objects = re.findall(r"<object>.*?</object>", xml, flags=re.S)
    assert len(objects) >= 2
    with open(xml_path, "w") as f:
        f.write(xml.replace(objects[-1], ""))
    assert run_tool("train_svm", argv) == 0
    assert read_json(os.path.join(model, "train_report.json"))["num_positives"] == before - 1


def test_a_new_proposal_algorithm_retrains_and_retests(world, tmp_path, monkeypatch, capsys):
    """Same settings, same data, but proposals from another version of the algorithm: the
    model, its work directory and the test detections computed from the old boxes are stale."""
    import proposals.store

    model, test_dir = str(tmp_path / "model"), str(tmp_path / "test")
    shutil.copytree(world["model"], model)
    shutil.copytree(world["out"] / "test", test_dir)
    argv = ["--set", *world["overrides"], "--out", model, "--quiet"]
    assert run_tool("train_svm", argv) == 0
    assert "up to date" in capsys.readouterr().err
    monkeypatch.setattr(proposals.store, "ALGORITHM_VERSION", proposals.store.ALGORITHM_VERSION + 100)
    assert run_tool("train_svm", argv) == 0
    err = capsys.readouterr().err
    assert "up to date" not in err and "positives: reusing" not in err and "images to compute" in err
    det_dir = os.path.join(test_dir, "detections")
    before = {f: os.stat(os.path.join(det_dir, f)).st_mtime_ns for f in os.listdir(det_dir)}
    assert run_tool("test_net", ["--model", model, "--out", test_dir, "--quiet"]) == 0
    assert "6 of 6 images to compute" in capsys.readouterr().err
    after = {f: os.stat(os.path.join(det_dir, f)).st_mtime_ns for f in os.listdir(det_dir)}
    assert len(after) == 6 and all(after[f] != before[f] for f in before)  # every detection recomputed


# ----------------------------------------------------------------------------- corrupt files


def test_truncated_cache_entries_are_recomputed_with_a_warning(world, capsys):
    """Proposal, conv5, positives, mining-state and detection entries: truncated or zero
    bytes, each is recomputed, with a warning naming it, to the same result."""
    out = world["out"]
    cache = str(out / "cache")
    from detect.cli import DEFAULT_CONFIG
    from detect.config import load_config
    from detect.feature_sources import WindowFeatures
    from detect.stages import proposal_key

    # the directories these settings use (other tests add directories of other keys to
    # this cache), and in them the entry of a training image: the retrain reads every one
    # (a test image's entry would not be read again, its detections being cached)
    cfg = load_config(DEFAULT_CONFIG, world["overrides"])
    with open(os.path.join(world["data"], "ImageSets", "Main", "trainval.txt")) as f:
        first_train = sorted(line.strip() for line in f if line.strip())[0]
    proposal = os.path.join(cache, "proposals", f"{cfg.proposals.backend}-{proposal_key(cfg)}", f"{first_train}.npz")
    conv_dir = WindowFeatures.from_config(cfg, cache_root=os.path.join(cache, "features"))._conv_entries().directory
    conv5 = os.path.join(conv_dir, f"{first_train}.npz")
    assert os.path.isfile(proposal) and os.path.isfile(conv5), (proposal, conv5)
    work = os.path.join(world["model"], "work")
    det = os.path.join(out / "test", "detections", sorted(os.listdir(out / "test" / "detections"))[0])
    truncate(proposal)
    truncate(conv5, keep=0.0)
    truncate(os.path.join(work, "positives.npz"), keep=0.3)
    with open(os.path.join(work, "mining_state.npz"), "wb") as f:
        f.write(b"PK\x03\x04 not a zip")
    truncate(det, keep=0.9)
    # a model must be retrained to read its work directory: same settings, new seal
    os.remove(os.path.join(world["model"], "manifest.json"))
    capsys.readouterr()
    assert run_tool("train_svm", ["--set", *world["overrides"], "--out", world["model"], "--quiet"]) == 0
    assert run_tool("test_net", ["--model", world["model"], "--out", str(out / "test"), "--quiet"]) == 0
    warned = capsys.readouterr().err  # the tools log to stderr
    for path in (proposal, conv5, os.path.join(work, "positives.npz"), os.path.join(work, "mining_state.npz"), det):
        assert f"{path}: corrupt" in warned, path
    svm = load_npz(os.path.join(world["model"], "svm.npz"))
    np.testing.assert_allclose(svm["weights"], world["svm"]["weights"], rtol=1e-5, atol=1e-6)
    assert read_json(out / "test" / "results.json")["map"] == world["results"]["map"]


def test_corrupt_finetuning_state_starts_afresh(world, capsys):
    path = str(world["out"] / "ft-corrupt" / "network.npz")
    os.makedirs(os.path.dirname(path))
    with open(path.replace(".npz", "_state.pt"), "wb") as f:
        f.write(b"\x00" * 10)
    capsys.readouterr()
    argv = ["--set", *world["overrides"], "finetune.iterations=2", "finetune.batch_size=8", "--out", path, "--quiet"]
    assert run_tool("finetune_fc", argv) == 0
    assert "corrupt fine-tuning state" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncate svm.npz", "empty model.json", "drop bias", "no manifest",
                                    "truncate network.npz"])
def test_damaged_model_directory_is_one_line_exit_2(world, tmp_path, capsys, damage):
    from sppcore.fileio import atomic_save_npz

    model = str(tmp_path / "model")
    shutil.copytree(world["model"], model)
    if damage == "truncate svm.npz":
        truncate(os.path.join(model, "svm.npz"))
    elif damage == "empty model.json":
        open(os.path.join(model, "model.json"), "w").close()
    elif damage == "drop bias":
        arrays = load_npz(os.path.join(model, "svm.npz"))
        del arrays["bias"]
        atomic_save_npz(os.path.join(model, "svm.npz"), **arrays)
    elif damage == "no manifest":
        os.remove(os.path.join(model, "manifest.json"))
    else:
        truncate(os.path.join(model, "network.npz"))
    capsys.readouterr()
    assert run_tool("test_net", ["--model", model, "--out", str(tmp_path / "t"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and model in err[0], err


@pytest.mark.parametrize("override, key", [("features.method=rcnn", "features.method"),
                                           ("network.levels=[1,2,3,6]", "network.levels")])
def test_settings_that_must_match_the_model(world, tmp_path, capsys, override, key):
    capsys.readouterr()
    argv = ["--model", world["model"], "--out", str(tmp_path / "t"), "--quiet", "--set", override]
    assert run_tool("test_net", argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0], err
