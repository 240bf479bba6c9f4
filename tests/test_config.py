import math
import re
import typing

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
    assert cfg.network.levels == (6, 3, 2, 1)
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
    assert config_to_dict(build_config({}))["network"]["levels"] == [6, 3, 2, 1]
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



def test_a_setting_under_its_earlier_key_is_read_at_its_current_one(tmp_path):
    # features.levels moved to network.levels: files, overrides and configs saved in model
    # directories before the move still load, and mean the same
    old = tmp_path / "old.yaml"
    old.write_text("features:\n  levels: [4, 2, 1]\n  method: rcnn\n")
    cfg = load_config(str(old))
    assert cfg.network.levels == (4, 2, 1) and cfg.features.method == "rcnn"
    assert "levels" not in config_to_dict(cfg)["features"]
    assert load_config(None, ["features.levels=[3,1]"]).network.levels == (3, 1)
    # an override under the earlier key wins over a base config's current one
    assert load_config(None, ["features.levels=[2,1]"], base=cfg).network.levels == (2, 1)
    derived = tmp_path / "derived.yaml"
    derived.write_text("_base_: old.yaml\nnetwork:\n  levels: [6, 1]\n")
    assert load_config(str(derived)).network.levels == (6, 1)
    with pytest.raises(ConfigError, match=r"features\.levels: \[4, 2\] conflicts with network\.levels: \[6, 1\]"):
        build_config({"features": {"levels": [4, 2]}, "network": {"levels": [6, 1]}})
    assert build_config({"features": {"levels": [6, 1]}, "network": {"levels": [6, 1]}}).network.levels == (6, 1)
    with pytest.raises(ConfigError, match=r"network\.levels: \[6, 6\] is not allowed"):
        load_config(None, ["features.levels=[6,6]"])


# ----------------------------------------------------------------------------- validation


def test_every_setting_has_a_rule():
    from detect.config import RULES, setting_keys

    keys = set(setting_keys())
    missing = sorted(keys - set(RULES))
    assert not missing, (f"settings without a rule in detect/config.py RULES: {missing}; add one line each, "
                         "e.g. \"proposals.new_size\": POSITIVE_INT")
    assert not sorted(set(RULES) - keys), "RULES names settings that no longer exist"


def test_rule_tables_match_the_code_they_guard():
    from detect.config import TRUNK_NAMES
    from detect.trunks import TRUNKS

    assert TRUNK_NAMES == tuple(TRUNKS)


def _numeric_settings():
    from detect.config import setting_keys

    for key, tp in setting_keys().items():
        item = typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else tp
        if item in (int, float):
            yield key, tp, item


@pytest.mark.parametrize("key, tp, item", list(_numeric_settings()), ids=lambda v: v if isinstance(v, str) else "")
def test_no_float_setting_takes_nan_or_inf_and_no_int_setting_minus_one(key, tp, item):
    is_list = typing.get_origin(tp) is tuple
    bad = ["nan", "inf"] if item is float else ["-1"]
    if key == "test.score_threshold":
        bad = ["nan", "inf"]  # -inf: keep every detection, the default
    for value in bad:
        override = f"{key}=[{value}]" if is_list else f"{key}={value}"
        with pytest.raises(ConfigError, match=re.escape(key + ("[0]" if is_list else "") + ":")):
            load_config(None, [override])


@pytest.mark.parametrize(
    "override, message",
    [
        ("features.scales=[-300]", "features.scales[0]: -300 is not allowed (a positive integer)"),
        ("features.scales=[]", "features.scales: [] is not allowed (a non-empty list of positive integers)"),
        ("network.levels=[6, 6]", "network.levels: [6, 6] is not allowed (a non-empty list of distinct"),
        ("test.nms_iou=1.5", "test.nms_iou: 1.5 is not allowed (a number in [0, 1])"),
        ("test.score_threshold=nan", "test.score_threshold: nan is not allowed (a finite number or -inf)"),
        ("svm.negative_iou=0", "svm.negative_iou: 0 is not allowed (a number in (0, 1])"),
        ("svm.cache_dtype=int8", "svm.cache_dtype: unknown dtype 'int8' (allowed: float16, float32)"),
        ("svm.evict_threshold=0", "svm.evict_threshold: 0.0 is not allowed (at most svm.hard_threshold, -1.0001)"),
        ("features.layer=conv5", "features.layer: unknown layer 'conv5' (allowed: pool5, fc6, fc7)"),
        ("bbox_reg.layer=fc8", "bbox_reg.layer: unknown layer 'fc8'"),
        ("features.method=fast", "features.method: unknown method 'fast' (allowed: spp, rcnn)"),
        ("features.device=cuda:x", "features.device: 'cuda:x' is not allowed (cpu, cuda or cuda:N)"),
        ("proposals.backend=magic", "proposals.backend: unknown backend 'magic' (allowed: rcnn_fast"),
        ("proposals.color_spaces=[hsv, xyz]", "proposals.color_spaces[1]: unknown colour space 'xyz'"),
        ("proposals.color_spaces=[]", "proposals.color_spaces: [] is not allowed"),
        ("network.trunk=resnet", "network.trunk: unknown trunk 'resnet' (allowed: compact, zf5, alexnet, vgg16"),
        ("network.weights=''", "network.weights: '' is not allowed (a non-empty string)"),
        ("network.dropout=1", "network.dropout: 1 is not allowed (a number in [0, 1))"),
        ("finetune.bg_iou_low=0.5", "finetune.bg_iou_low: 0.5 is not allowed (below finetune.fg_iou, 0.5)"),
        ("features.rcnn_context_pad=120", "features.rcnn_context_pad: 120 is not allowed (less than half of"),
        ("pretrain.image_scales=[256]", "pretrain.image_scales: [256] is not allowed (empty, or two increasing"),
        ("pretrain.image_scales=[448, 256]", "pretrain.image_scales: [448, 256] is not allowed"),
        ("data.classes=[cat, cat]", "data.classes: ['cat', 'cat'] is not allowed (distinct class names"),
        ("data.classes=[cat, a/b]", "data.classes[1]: 'a/b' is not allowed (a plain name"),
        ("data.test_set=../test", "data.test_set: '../test' is not allowed (a plain name"),
        ("name=''", "name: '' is not allowed (a plain name"),
        ("seed=-1", "seed: -1 is not allowed (an integer in [0, 4294967295])"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


@pytest.mark.parametrize("override", [
    "test.score_threshold=-inf", "features.device=cuda:1", "features.device=cuda", "pretrain.image_scales=[]",
    "finetune.fg_fraction=0", "features.fc_svd_rank=0", "bbox_reg.max_examples_per_object=0",
    "data.classes=[cat, dog]", "proposals.backend=rcnn_mat", "proposals.min_size=0",
])
def test_edge_values_that_are_allowed(override):
    load_config(None, [override])


def test_settings_over_a_trained_models_config_are_checked():
    base = load_config(None, ["name=trained"])
    with pytest.raises(ConfigError, match=r"test\.nms_iou: nan is not allowed"):
        load_config(None, ["test.nms_iou=nan"], base=base)


def test_a_setting_without_a_rule_is_still_checked_by_type(monkeypatch):
    from detect import config

    monkeypatch.delitem(config.RULES, "svm.target_norm")
    monkeypatch.delitem(config.RULES, "pretrain.image_scales")
    with pytest.raises(ConfigError, match=r"svm\.target_norm: nan is not allowed \(a finite number\)"):
        load_config(None, ["svm.target_norm=nan"])
    with pytest.raises(ConfigError, match=r"pretrain\.image_scales\[1\]: inf is not allowed \(a finite number\)"):
        load_config(None, ["pretrain.image_scales=[1, inf]"])


def test_validate_config_checks_a_config_built_in_code():
    import dataclasses

    from detect.config import validate_config

    cfg = load_config(None)
    assert validate_config(cfg) is cfg
    bad = dataclasses.replace(cfg, test=dataclasses.replace(cfg.test, max_per_class=0))
    with pytest.raises(ConfigError, match=r"test\.max_per_class: 0 is not allowed"):
        validate_config(bad)
