"""More than one process (torchrun): sharding, the environment, and 2-process runs of the
tools on the tiny generated set that must equal one process's outputs."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from detect import distributed
from detect.distributed import World, proposal_workers, world_from_env
from sppcore.errors import UserError
from sppcore.fileio import load_npz
from tooling import FAST_MODEL, ROOT, run_tool

TORCHRUN_ENV = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}


# ------------------------------------------------------------------------------ sharding


def test_shards_are_strided_disjoint_and_cover_every_image():
    ids = [f"{i:06d}" for i in range(7)]
    shards = [World(rank, 3, rank, 3).shard(ids) for rank in range(3)]
    assert shards == [["000000", "000003", "000006"], ["000001", "000004"], ["000002", "000005"]]
    assert sorted(sum(shards, [])) == ids
    assert World(0, 9).shard(ids[:2]) == ["000000"] and World(5, 9).shard(ids[:2]) == []


def test_one_process_without_torchrun():
    assert world_from_env({}) == distributed.SINGLE
    world = distributed.init("cpu", environ={})
    assert world == distributed.SINGLE and not world.parallel and world.is_main
    assert world.shard(["a", "b"]) == ["a", "b"] and distributed.current() == distributed.SINGLE
    distributed.barrier()  # no process group: nothing to wait for
    distributed.finish()


def test_world_from_torchrun_variables():
    world = world_from_env(TORCHRUN_ENV)
    assert world == World(rank=1, size=2, local_rank=1, local_size=2)
    assert world.parallel and not world.is_main


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}, "LOCAL_WORLD_SIZE missing"),
    ({**TORCHRUN_ENV, "RANK": "two"}, "RANK='two': not an integer"),
    ({**TORCHRUN_ENV, "RANK": "2"}, "need 0 <= RANK < WORLD_SIZE"),
    ({**TORCHRUN_ENV, "LOCAL_WORLD_SIZE": "3"}, "LOCAL_RANK < LOCAL_WORLD_SIZE <= WORLD_SIZE"),
])
def test_bad_torchrun_variables_are_one_line_errors(env, message):
    with pytest.raises(UserError, match=message) as e:
        world_from_env(env)
    assert "\n" not in str(e.value)


def test_proposal_workers_share_the_cores():
    assert proposal_workers(3, World(), cores=16) == 3  # an explicit count is kept
    assert proposal_workers(0, World(), cores=16) == 16
    assert proposal_workers(0, World(1, 8, 1, 4), cores=16) == 4  # 4 processes on this machine
    assert proposal_workers(0, World(0, 4, 0, 4), cores=3) == 1  # never below one
    assert proposal_workers(0, cores=None) == distributed.cores_available() >= 1


def test_backend_follows_the_device():
    assert distributed.backend_for("cpu") == "gloo"
    assert distributed.backend_for("cuda") == distributed.backend_for("cuda:1") == "nccl"


def test_nccl_without_a_gpu_is_refused_in_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the NCCL path runs in the 2-process GPU check instead")
    with pytest.raises(UserError, match="features.device=cuda: torch sees no CUDA device"):
        distributed.init("cuda", environ=TORCHRUN_ENV)
    assert distributed.current() == distributed.SINGLE  # nothing half-initialised


@pytest.mark.parametrize("stage, message", [("run_pretraining", "pretraining runs as one process")])
def test_sequential_stages_are_refused_under_torchrun(monkeypatch, stage, message):
    from detect import pipeline
    from detect.config import load_config

    for name, value in TORCHRUN_ENV.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UserError, match=message):  # before any file is read or written
        getattr(pipeline, stage)(load_config(None, ["output_dir=/nonexistent/out", "data.root=/nonexistent/data"]))


# ---------------------------------------------------------------------- proposals.workers


def test_proposal_workers_setting_is_in_no_key():
    from detect.config import ConfigError, keyed_settings, load_config
    from detect.stages import proposal_key

    base, other = load_config(None), load_config(None, ["proposals.workers=5"])
    assert other.proposals.workers == 5 and base.proposals.workers == 0
    assert keyed_settings(base) == keyed_settings(other) and "workers" not in keyed_settings(base)["proposals"]
    assert proposal_key(base) == proposal_key(other)
    with pytest.raises(ConfigError, match="proposals.workers: -1 is not allowed"):
        load_config(None, ["proposals.workers=-1"])


def test_compute_proposals_refuses_a_negative_worker_count(capsys):
    assert run_tool("compute_proposals", ["--workers", "-1", "--set", "data.root=/nonexistent"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--workers must be 0 (the cores available) or positive, got -1" in err and "\n" not in err


def test_a_shard_builds_its_own_images_and_rank_0_the_whole_store(synthetic_voc, tmp_path, monkeypatch):
    """Each process's part of build_proposal_store, run here one after the other (the
    barrier between them is what the 2-process tests below exercise)."""
    from detect.config import load_config
    from detect.stages import build_proposal_store, open_dataset

    cfg = load_config(None, [f"data.root={synthetic_voc}", f"cache_dir={tmp_path}", "proposals.max_boxes=50",
                             "proposals.workers=1"])
    dataset = open_dataset(cfg, "test", 3)
    monkeypatch.setattr(distributed, "barrier", lambda: None)
    computed = []
    from proposals import ProposalStore

    original = ProposalStore.build.__func__

    def build(cls, proposal_cfg, ids, *args, **kwargs):
        computed.append(list(ids))
        return original(cls, proposal_cfg, ids, *args, **kwargs)

    monkeypatch.setattr(ProposalStore, "build", classmethod(build))
    monkeypatch.setattr(distributed, "current", lambda: World(1, 2, 1, 2))
    shard = build_proposal_store(cfg, dataset, progress=False)
    assert shard.image_ids == dataset.image_ids[1::2] and computed == [dataset.image_ids[1::2]]
    monkeypatch.setattr(distributed, "current", lambda: World(0, 2, 0, 2))
    whole = build_proposal_store(cfg, dataset, progress=False)
    assert computed[1:] == [dataset.image_ids[0::2], dataset.image_ids]
    assert whole.image_ids == dataset.image_ids
    assert np.array_equal(whole[dataset.image_ids[1]], shard[dataset.image_ids[1]])


# ------------------------------------------------------------------ 2 processes, end to end


def _env():
    # one BLAS/OpenMP thread in every process, as torchrun gives each of its processes:
    # float sums then group the same way in both runs, so the outputs are bit-equal
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV and not k.startswith("SPPDET_")}
    env.update(PYTHONPATH=ROOT, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return env


def _run(argv, processes=1):
    """(stdout, stderr) of a tool run as one process or under torchrun."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
                if processes > 1 else [sys.executable])
    proc = subprocess.run([*launcher, *argv], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, proc.stderr


def _entries(cache):
    (directory,) = [d for d in (cache / "proposals").iterdir() if d.is_dir()]
    return {p.name: load_npz(p) for p in sorted(directory.glob("*.npz"))}


def test_two_processes_compute_the_same_proposal_entries(synthetic_voc, tmp_path):
    from detect.config import load_config
    from detect.stages import build_proposal_store, open_dataset

    overrides = [f"data.root={synthetic_voc}", "proposals.max_boxes=50"]
    stdout, stderr = _run(["tools/compute_proposals.py", "--image-set", "test", "--num-images", "2", "--set",
                           *overrides, f"cache_dir={tmp_path / 'two'}"], processes=2)
    # rank 0 reports, and logs at INFO; it computed its own image only (rank 1 the other)
    assert stdout.count("test: 2 images") == 1 and stderr.count("process group: 2 processes (gloo)") == 1
    assert "1 of 1 images to compute" in stderr and "of 2 images to compute" not in stderr
    cfg = load_config(None, [*overrides, f"cache_dir={tmp_path / 'one'}"])
    build_proposal_store(cfg, open_dataset(cfg, "test", 2), progress=False, workers=1)
    one, two = _entries(tmp_path / "one"), _entries(tmp_path / "two")
    assert sorted(one) == sorted(two) and len(one) == 2
    for name in one:  # the same boxes under the same entry key; only the seconds differ
        assert np.array_equal(one[name]["boxes"], two[name]["boxes"])
        assert one[name]["entry_key"] == two[name]["entry_key"]


@pytest.mark.slow
def test_two_processes_train_and_test_like_one(synthetic_voc, tmp_path):
    """train_svm and test_net under torchrun (2 processes, gloo): the same proposal
    entries, SVMs, detections and mAP as one process (about 3 minutes on 2 cores)."""
    runs = {}
    for name, processes in (("one", 1), ("two", 2)):
        out = tmp_path / name
        overrides = [f"data.root={synthetic_voc}", f"cache_dir={out / 'cache'}", f"output_dir={out}", *FAST_MODEL]
        if processes > 1:  # the training images' proposals by compute_proposals, the test images' by test_net
            _run(["tools/compute_proposals.py", "--image-set", "trainval", "--set", *overrides], processes)
        stdout, _ = _run(["tools/train_svm.py", "--quiet", "--out", str(out / "model"), "--set", *overrides], processes)
        assert stdout.count("model written to") == 1
        stdout, stderr = _run(["tools/test_net.py", "--quiet", "--model", str(out / "model"),
                               "--out", str(out / "test")], processes)
        assert stdout.count("results written to") == 1
        if processes > 1:  # the 6 test images' proposals: rank 0 computed its 3 only
            assert "3 of 3 images to compute" in stderr and "of 6 images to compute" not in stderr
        with open(out / "test" / "results.json") as f:
            runs[name] = {"entries": _entries(out / "cache"), "svm": load_npz(out / "model" / "svm.npz"),
                          "detections": load_npz(out / "test" / "detections.npz"), "results": json.load(f)}
    one, two = runs["one"], runs["two"]
    assert sorted(one["entries"]) == sorted(two["entries"]) and len(one["entries"]) == 16
    for name, arrays in one["entries"].items():
        assert np.array_equal(arrays["boxes"], two["entries"][name]["boxes"])
    for key in ("weights", "bias"):
        np.testing.assert_allclose(one["svm"][key], two["svm"][key], rtol=1e-6, atol=1e-7)
    assert set(one["detections"]) == set(two["detections"])
    for key, values in one["detections"].items():
        assert np.array_equal(values, two["detections"][key]), key
    assert one["results"]["map"] == two["results"]["map"] and one["results"]["ap_per_class"] == two["results"]["ap_per_class"]


@pytest.mark.slow
def test_two_processes_fine_tune_like_one(synthetic_voc, tmp_path):
    """finetune_fc under torchrun (2 processes, gloo): the shards' proposals and conv5
    maps, then rank 0's SGD: the network one process gives, bit for bit."""
    import torch

    from detect.trunks import load_network

    networks = {}
    for name, processes in (("one", 1), ("two", 2)):
        out = tmp_path / name
        overrides = [f"data.root={synthetic_voc}", f"cache_dir={out / 'cache'}", f"output_dir={out}", *FAST_MODEL,
                     "finetune.iterations=12", "finetune.batch_size=32"]
        stdout, stderr = _run(["tools/finetune_fc.py", "--quiet", "--out", str(out / "ft" / "network.npz"),
                               "--set", *overrides], processes)
        assert stdout.count("fine-tuned 12 iterations") == 1
        if processes > 1:  # each process computed the proposals of its 5 training images
            assert stderr.count("5 of 5 images to compute") == 1 and "of 10 images to compute" not in stderr
        networks[name] = load_network(str(out / "ft" / "network.npz"))
    for (k, a), (k2, b) in zip(networks["one"][1].state_dict().items(), networks["two"][1].state_dict().items()):
        assert k == k2 and torch.equal(a, b), k


# ------------------------------------------------------------------------- bench/scale.py


def test_scaling_figures():
    import importlib.util

    spec = importlib.util.spec_from_file_location("scale", os.path.join(ROOT, "bench", "scale.py"))
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)
    # 4 and 8 images: 1 process 6 s and 10 s (1 image/s, 2 s start-up), 2 processes 5 s and 7 s
    rows = scale.scaling_rows("proposals", (4, 8), {1: (6.0, 10.0), 2: (5.0, 7.0)})
    assert [r["images_per_second"] for r in rows] == [0.8, 8 / 7]
    assert [r["steady_images_per_second"] for r in rows] == [1.0, 2.0]
    assert [r["startup_seconds"] for r in rows] == [2.0, 3.0]
    assert [r["speedup"] for r in rows] == [1.0, 2.0] and [r["efficiency"] for r in rows] == [1.0, 1.0]
    hours = scale.extrapolate(rows[1], cores_used=2, cores_per_machine=16)  # 1 image/s per core
    assert hours["118k"]["1"] == pytest.approx(118287 / 16 / 3600)
    assert hours["VOC07 (9,963)"]["16"] == pytest.approx(9963 / 256 / 3600)
    assert scale.parse_procs("2,1,2") == [1, 2]
    with pytest.raises(SystemExit, match="--procs"):
        scale.parse_procs("1,x")
