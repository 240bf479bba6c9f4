"""A pretrained network shipped with its key (pretrain.shipped): used only where the run
would train exactly that network, never when settings, images or kernels differ, never
when damaged, and not at all with pretrain.shipped="" (train here)."""
import json
import logging
import os
import shutil

import pytest

import detect.pipeline as pipeline
from detect.config import load_config


def tiny_pretraining(root, out, *extra):
    return load_config(None, [f"data.root={root}", f"output_dir={out}", "network.fc_dim=16", "pretrain.sizes=[40]",
                              "pretrain.epochs=1", "pretrain.train_set=train", "pretrain.val_set=val", *extra])


@pytest.fixture()
def shipped(synthetic_voc, tmp_path):
    """A tiny pretrained network, trained once and shipped into ``tmp_path/shipped``."""
    cfg = tiny_pretraining(synthetic_voc, tmp_path / "trained_elsewhere")
    pipeline.run_pretraining(cfg, progress=False)
    return pipeline.ship_pretrained_network(cfg, str(tmp_path / "shipped"))


@pytest.fixture()
def trainings(monkeypatch):
    """The sizes of every pretraining that actually trains, in order."""
    import detect.pretrain as pretrain_module

    calls, original = [], pretrain_module.pretrain

    def counting(*args, **kwargs):
        calls.append(kwargs["sizes"])
        return original(*args, **kwargs)

    monkeypatch.setattr(pretrain_module, "pretrain", counting)
    return calls


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_a_shipped_network_of_the_same_key_is_used_instead_of_training(synthetic_voc, shipped, tmp_path, trainings):
    cfg = tiny_pretraining(synthetic_voc, tmp_path / "user", f"pretrain.shipped={shipped}")
    report = pipeline.run_pretraining(cfg, progress=False)
    assert trainings == []
    path = pipeline.pretrained_network_path(cfg)
    assert report["shipped"] == shipped and report["network"] == path
    assert read(path) == read(os.path.join(shipped, "network.npz"))
    assert report["runs"] == json.loads(read(os.path.join(shipped, "pretrain_report.json")))["runs"]
    # installed and sealed here: the next run reuses it without looking at the shipped one
    shutil.rmtree(shipped)
    assert pipeline.run_pretraining(cfg, progress=False) == report and trainings == []
    # pretrain.shipped is where a network may be found, not what it is: in no key
    from detect.config import keyed_settings

    assert "shipped" not in keyed_settings(cfg)["pretrain"]
    assert pipeline.pretraining_settings_key(cfg) == pipeline.pretraining_settings_key(
        tiny_pretraining(synthetic_voc, tmp_path / "user"))


def test_a_shipped_network_is_found_for_the_same_images_elsewhere(synthetic_voc, shipped, tmp_path, trainings):
    """Where the images and the network file live is not what the network is: the same
    images (byte for byte) under another root, another output path and another
    network.weights still take the shipped network."""
    root = str(tmp_path / "copy" / "VOC2007")
    shutil.copytree(synthetic_voc, root)
    cfg = tiny_pretraining(root, tmp_path / "user", f"pretrain.shipped={shipped}",
                           f"pretrain.out={tmp_path / 'nets' / 'mine.npz'}", "network.weights=elsewhere.npz")
    report = pipeline.run_pretraining(cfg, progress=False)
    assert trainings == [] and report["shipped"] == shipped
    assert read(tmp_path / "nets" / "mine.npz") == read(os.path.join(shipped, "network.npz"))
    assert pipeline.run_pretraining(cfg, progress=False) == report and trainings == []


@pytest.mark.parametrize("change", ["settings", "kernels", "images"])
def test_a_shipped_network_of_another_key_is_never_used(synthetic_voc, shipped, tmp_path, trainings, monkeypatch,
                                                        caplog, change):
    root, extra = synthetic_voc, []
    if change == "settings":
        extra = ["pretrain.lr=0.002"]
    elif change == "kernels":
        other = "NOT_" + pipeline.cpu_kernels()
        monkeypatch.setattr(pipeline, "cpu_kernels", lambda: other)
    else:  # one annotation of the pretraining images edited
        root = str(tmp_path / "edited" / "VOC2007")
        shutil.copytree(synthetic_voc, root)
        xml = os.path.join(root, "Annotations", sorted(os.listdir(os.path.join(root, "Annotations")))[0])
        with open(xml, "a", encoding="utf-8") as f:
            f.write("\n")
    cfg = tiny_pretraining(root, tmp_path / "user", f"pretrain.shipped={shipped}", *extra)
    with caplog.at_level(logging.INFO, logger="detect.pipeline"):
        report = pipeline.run_pretraining(cfg, progress=False)
    # trained here (its bytes may equal the shipped ones: a faked kernel name or a blank
    # line in an annotation trains the same weights; what counts is that they were trained)
    assert trainings == [(40,)] and "shipped" not in report
    said = {"settings": "pretrain.lr", "kernels": "cpu_kernels", "images": "the pretraining"}[change]
    assert any("another key" in r.message and said in r.message for r in caplog.records), caplog.text


@pytest.mark.parametrize("damage", ["truncated network", "edited key file", "no seal"])
def test_a_damaged_shipped_network_is_never_used(synthetic_voc, shipped, tmp_path, trainings, caplog, damage):
    if damage == "truncated network":
        network = os.path.join(shipped, "network.npz")
        data = read(network)
        with open(network, "wb") as f:
            f.write(data[: len(data) // 2])
    elif damage == "edited key file":  # claims another learning rate: the seal no longer holds
        key_file = os.path.join(shipped, pipeline.SHIPPED_KEY_FILE)
        parts = json.loads(read(key_file))
        parts["pretrain"]["lr"] = 0.002
        with open(key_file, "w", encoding="utf-8") as f:
            json.dump(parts, f)
    else:
        os.unlink(os.path.join(shipped, "manifest.json"))
    cfg = tiny_pretraining(synthetic_voc, tmp_path / "user", f"pretrain.shipped={shipped}")
    with caplog.at_level(logging.INFO, logger="detect.pipeline"):
        report = pipeline.run_pretraining(cfg, progress=False)
    assert trainings == [(40,)] and "shipped" not in report
    assert any("not using the shipped network" in r.message for r in caplog.records), caplog.text


def test_an_empty_pretrain_shipped_trains_here_even_over_an_installed_copy(synthetic_voc, shipped, tmp_path,
                                                                           trainings):
    with_shipped = tiny_pretraining(synthetic_voc, tmp_path / "user", f"pretrain.shipped={shipped}")
    assert pipeline.run_pretraining(with_shipped, progress=False)["shipped"] == shipped and trainings == []
    here = pipeline.run_pretraining(tiny_pretraining(synthetic_voc, tmp_path / "user"), progress=False)
    assert trainings == [(40,)] and "shipped" not in here
    # the network trained here has the same key: later runs keep it, shipped or not
    assert pipeline.run_pretraining(with_shipped, progress=False) == here and trainings == [(40,)]


def test_compare_keeps_the_shipped_network_and_trains_the_single_size_run(synthetic_voc, tmp_path, trainings):
    cfg = tiny_pretraining(synthetic_voc, tmp_path / "elsewhere", "pretrain.sizes=[40,32]")
    pipeline.run_pretraining(cfg, progress=False)
    shipped = pipeline.ship_pretrained_network(cfg, str(tmp_path / "shipped"))
    user = tiny_pretraining(synthetic_voc, tmp_path / "user", "pretrain.sizes=[40,32]", f"pretrain.shipped={shipped}")
    both = pipeline.run_pretraining(user, compare=True, progress=False)
    assert trainings == [(40, 32), (40,)]  # the first trained elsewhere, the second here
    assert [r["sizes"] for r in both["runs"]] == [[40, 32], [40]] and both["shipped"] == shipped
    assert read(pipeline.pretrained_network_path(user)) == read(os.path.join(shipped, "network.npz"))


def test_shipping_needs_a_finished_pretraining(synthetic_voc, tmp_path):
    from sppcore.errors import UserError

    with pytest.raises(UserError, match="run tools/pretrain.py first"):
        pipeline.ship_pretrained_network(tiny_pretraining(synthetic_voc, tmp_path / "none"), str(tmp_path / "s"))


BUILTIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "pretrained", "default")


def builtin_key_parts():
    with open(os.path.join(BUILTIN, pipeline.SHIPPED_KEY_FILE), encoding="utf-8") as f:
        return json.load(f)


def test_the_built_in_default_ships_the_network_its_settings_train():
    """configs/default.yaml names the shipped network, and its settings are the ones that
    network was trained under (changing them without shipping a new one would make every
    quickstart pretrain for minutes): sealed, and the same settings, classes and seed."""
    from detect.cli import DEFAULT_CONFIG
    from sppcore.fileio import read_seal, stable_hash

    cfg = load_config(DEFAULT_CONFIG)
    assert cfg.pretrain.shipped == "data/pretrained/default"  # relative to the repository root, as data.root
    manifest, reason = read_seal(BUILTIN)
    assert manifest is not None, reason
    parts = builtin_key_parts()
    assert manifest["key"] == stable_hash(stable_hash(parts))
    expected = pipeline.pretraining_settings_key(cfg)
    assert parts["cpu_kernels"] == "AVX2"  # trained with the kernels every x86 machine pins
    for name in ("pretrain", "network", "levels", "classes", "seed"):
        assert parts[name] == expected[name], name
    assert len(parts["train"]) == 800 and len(parts["val"]) == 200


@pytest.mark.slow
def test_the_built_in_pretraining_images_are_generated_with_the_shipped_digests(tmp_path):
    """A fresh machine generates the pretraining images byte for byte as they were when
    the network was shipped, so that its quickstart uses the shipped network."""
    from detect.synthetic import generate_synthetic_voc
    from detect.voc import VOCDataset
    from tooling import load_tool

    root = generate_synthetic_voc(str(tmp_path), seed=load_tool("quickstart").PRETRAIN_SEED, num_trainval=800, num_test=200, progress=False)
    parts = builtin_key_parts()
    assert VOCDataset(root, "trainval").identity() == parts["train"]
    assert VOCDataset(root, "test").identity() == parts["val"]
