import math

import pytest

from detect.config import (
    Config,
    ConfigError,
    build_config,
    config_to_dict,
    load_config,
    parse_overrides,
    save_config,
    section_hash,
)


def test_defaults_are_the_papers():
    cfg = load_config(None)
    assert cfg.svm.C == 0.001 and cfg.svm.bias_multiplier == 10 and cfg.svm.pos_loss_weight == 2
    assert cfg.features.levels == (6, 3, 2, 1)
    assert cfg.test.nms_iou == 0.3 and cfg.test.max_per_class == 100
    assert cfg.test.score_threshold == -math.inf


def test_overrides_and_types():
    cfg = load_config(None, ["svm.C=1e-2", "features.scales=[480, 688]", "data.classes=[a, b]", "bbox_reg.enabled=false"])
    assert cfg.svm.C == 0.01
    assert cfg.features.scales == (480, 688)
    assert cfg.data.classes == ("a", "b")
    assert cfg.bbox_reg.enabled is False


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("svm.CC=1", "unknown key svm.CC"),
        ("nosuch.x=1", "unknown key nosuch"),
        ("svm.C=abc", "svm.C: expected a number"),
        ("features.scales=688", "features.scales: expected a list"),
        ("features.scales=[688, big]", "features.scales[1]: expected an integer"),
        ("bbox_reg.enabled=3", "bbox_reg.enabled: expected true/false"),
        ("svm=3", "svm: expected a mapping"),
        ("svm.C", "expected key=value"),
    ],
)
def test_bad_overrides_are_errors(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, [override])


def test_frozen():
    cfg = load_config(None)
    with pytest.raises(Exception):
        cfg.svm.C = 1.0  # type: ignore[misc]


def test_yaml_base_and_round_trip(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("name: base\nsvm:\n  C: 0.5\nfeatures:\n  scales: [480, 576]\n")
    child = tmp_path / "child.yaml"
    child.write_text("_base_: base.yaml\nname: child\nfeatures:\n  layer: pool5\n")
    cfg = load_config(str(child), ["seed=3"])
    assert (cfg.name, cfg.svm.C, cfg.features.scales, cfg.features.layer, cfg.seed) == (
        "child", 0.5, (480, 576), "pool5", 3)
    out = tmp_path / "out" / "config.yaml"
    save_config(cfg, str(out))
    assert load_config(str(out)) == cfg


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("svm: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("svm:\n  gamma: 1\n")
    with pytest.raises(ConfigError, match=r"unknown\.yaml: unknown key svm\.gamma"):
        load_config(str(unknown))


def test_section_hash_depends_only_on_its_section():
    a = load_config(None)
    b = load_config(None, ["svm.C=0.1"])
    assert section_hash(a.proposals) == section_hash(b.proposals)
    assert section_hash(a.svm) != section_hash(b.svm)


def test_parse_overrides_nesting():
    assert parse_overrides(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}
    assert config_to_dict(build_config({}))["features"]["levels"] == [6, 3, 2, 1]
    assert isinstance(build_config({}), Config)


def test_every_shipped_config_loads():
    import glob
    import os

    root = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs")
    files = sorted(glob.glob(os.path.join(root, "*.yaml")))
    assert files, "configs/ holds no YAML file"
    for path in files:
        load_config(path)


def test_load_over_a_base_config(tmp_path):
    base = load_config(None, ["svm.C=0.5", "name=trained"])
    extra = tmp_path / "extra.yaml"
    extra.write_text("test:\n  nms_iou: 0.4\n")
    cfg = load_config(str(extra), ["test.max_per_class=5"], base=base)
    assert (cfg.name, cfg.svm.C, cfg.test.nms_iou, cfg.test.max_per_class) == ("trained", 0.5, 0.4, 5)
