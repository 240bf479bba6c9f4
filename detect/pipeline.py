"""The stages wired together: what ``tools/train_svm.py``, ``tools/test_net.py`` and
``tools/demo.py`` call. Each function takes a config (or a model directory) and paths;
caches are keyed by the settings each stage depends on.
"""
from __future__ import annotations

import logging
import math
import os
import time

import numpy as np

from detect.config import Config, load_config, save_config
from detect.stages import build_proposal_store, open_dataset, proposal_key
from sppcore.errors import UserError
from sppcore.faults import kill_point
from sppcore.fileio import atomic_write_json

__all__ = ["train", "test", "reval", "demo"]

log = logging.getLogger(__name__)

# version of what a model's work/ directory holds (2: regression features in float16,
# the scale sample kept as norms); a work directory of another version starts afresh
WORK_LAYOUT = 2


def _add_file_handler(path: str) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def dataset_identity(dataset) -> list:
    """What a dataset's outputs depend on: per image (in order), its id and the content
    digests of its image and annotation files (:meth:`detect.dataset.DetectionDataset.identity`)."""
    return dataset.identity()


def _model_config_key(cfg: Config) -> dict:
    """The config part of a model's key: the settings results depend on
    (:func:`detect.config.keyed_settings`), leaving out settings added later at the value
    that reproduces the earlier behaviour (the ``classifier`` section at ``svm``,
    ``data.format`` at ``voc``), so that models sealed before they existed keep their key."""
    from detect.config import keyed_settings

    values = keyed_settings(cfg)
    if cfg.classifier.type == "svm":
        del values["classifier"]
    if cfg.data.format == "voc":
        del values["data"]["format"]
    return values


def _softmax_of_network(cfg: Config, head, classes):
    """``classifier.type: softmax``: the classifier of the configured network's fc8, which
    must have been trained for ``classes`` (a one-line UserError otherwise)."""
    from detect.classifiers import softmax_from_fc8
    from detect.trunks import network_fc8_classes

    weights = cfg.network.weights
    is_file = weights not in ("imagenet", "random")
    fc8 = head.fc8
    return softmax_from_fc8(None if fc8 is None else fc8.weight.detach().cpu().numpy(),
                            None if fc8 is None else fc8.bias.detach().cpu().numpy(),
                            network_fc8_classes(weights) if is_file else None, classes,
                            where=weights if is_file else f"network.weights={weights}")


def train(cfg: Config, out_dir: str | None = None, num_images: int | None = None, progress: bool = True) -> str:
    """Train the classifier (``classifier.type``: SVMs with hard-negative mining, or
    softmax: the network's fine-tuned fc8, nothing to train) and the box regressors for
    ``cfg``; returns the model directory.

    A model directory sealed by a run with the same key (the whole config, the training
    images and annotations, the network's weights, where the layers ran:
    :func:`detect.features.layer_numerics`) is up to date and returned as it is;
    otherwise the model is trained, resuming from ``work/`` when that holds checkpoints of
    the same training, and the directory is rewritten and sealed (:mod:`detect.model`).

    Under torchrun every process computes the proposals and SPP-net conv5 maps of its
    shard of the images, then rank 0 trains and writes the model and the others return
    (:mod:`detect.distributed`)."""
    from detect import distributed
    from detect.classifiers import LinearSVMClassifier
    from detect.feature_sources import WindowFeatures, network_digest
    from detect.model import DetectionModel, save_model, sealed_model_key
    from detect.training import train_detector
    from sppcore.fileio import stable_hash, unseal_directory

    world = distributed.init(cfg.features.device)
    progress = progress and world.is_main
    out_dir = out_dir or os.path.join(cfg.output_dir, cfg.name, "model")
    os.makedirs(out_dir, exist_ok=True)
    dataset = open_dataset(cfg, cfg.data.train_set, num_images)
    features = WindowFeatures.from_config(cfg, cache_root=os.path.join(cfg.cache_dir, "features"))
    identity = dataset_identity(dataset)
    model_key = {"config": _model_config_key(cfg), "data": identity, "proposals": proposal_key(cfg),
                 "network": network_digest(features.trunk, features.head), "layout": WORK_LAYOUT,
                 "numerics": _layer_numerics(features)}
    if sealed_model_key(out_dir) == stable_hash(model_key):
        log.info("%s: up to date (trained with the same settings, data and network)", out_dir)
        return out_dir
    # softmax: checked before any work, and not trained (the network's fc8 as it is)
    softmax = _softmax_of_network(cfg, features.head, dataset.classes) if cfg.classifier.type == "softmax" else None
    handler = _add_file_handler(os.path.join(out_dir, "train.log")) if world.is_main else None
    try:
        log.info("training %s on %s/%s: %d images, %d classes", cfg.name, cfg.data.root,
                 cfg.data.train_set, len(dataset), len(dataset.classes))
        # proposals.overlap: computed in the background while the first images' features are
        store = build_proposal_store(cfg, dataset, progress)
        if world.parallel:
            # the per-image part of training, in parallel; the mining pass is sequential
            features.fill_conv_cache(dataset, world.shard(dataset.image_ids), progress)
            distributed.barrier()
            if not world.is_main:
                return out_dir
        work_dir = os.path.join(out_dir, "work")
        _reset_stale_work_dir(work_dir, cfg, identity, model_key["network"], model_key["numerics"])
        result = train_detector(cfg, dataset, store, features.feature_fn(dataset), work_dir, progress)
        result.report["seconds"]["proposals"] = store.wait().fill_seconds
        # from here on the directory is rewritten: unsealed until the new model is complete
        unseal_directory(out_dir)
        network_file = features.save_network_if_needed(out_dir)
        atomic_write_json(os.path.join(out_dir, "train_report.json"), result.report)
        classifier = softmax or LinearSVMClassifier(cfg.features.layer, result.svm_weights, result.svm_bias,
                                                    result.feature_scale)
        model = DetectionModel(
            config=cfg, classes=tuple(dataset.classes), classifier=classifier, regressor=result.regressor,
            bbox_layer=cfg.bbox_reg.layer, network_file=network_file)
        save_model(model, out_dir, key=model_key)
        log.info("model written to %s (digest %s)", out_dir, model.digest)
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
    return out_dir


def _resume_key(cfg: Config, sections, identity, network: str, **extra) -> str:
    """A hash of everything a resumable stage's saved state depends on: the named config
    sections, the seed, the images and annotations (:func:`dataset_identity`), the
    network's digest, the proposals' key (:func:`detect.stages.proposal_key`: a new
    proposal algorithm invalidates the state too) and ``extra``."""
    from detect.config import keyed_settings
    from sppcore.fileio import stable_hash

    settings = keyed_settings(cfg)
    return stable_hash({section: settings[section] for section in sections}
                       | {"seed": cfg.seed, "data": identity, "network": network, "proposals": proposal_key(cfg)}
                       | extra)


def _layer_numerics(features) -> dict:
    """:func:`detect.features.layer_numerics` of the device ``features``' layers run on."""
    from detect import features as features_module

    return features_module.layer_numerics(features.extractor.device)


def _gpu_numerics(device: str) -> dict:
    """``{"numerics": layer_numerics(device)}`` for a network trained on a GPU, nothing on
    the CPU (whose kernels the training keys hold as ``cpu_kernels`` already, so that
    networks trained before GPUs were keyed keep their keys)."""
    from detect import features as features_module

    if device == "cpu":
        return {}
    return {"numerics": features_module.layer_numerics(device)}


def _reset_stale_work_dir(work_dir: str, cfg: Config, identity, network: str, numerics: dict) -> None:
    """The checkpoints in ``work_dir`` (positives, mining state) serve only a rerun of the
    same training: features, network weights, classifier type, SVM / regression settings,
    images and annotations, proposals, where the layers ran (``numerics``). A work directory left by other settings (or with an
    unreadable key) is emptied, so that a model directory reused with a new config never
    trains on stale features."""
    import json
    import shutil

    key = _resume_key(cfg, ("data", "proposals", "features", "svm", "bbox_reg"), identity, network,
                      layout=WORK_LAYOUT, classifier=cfg.classifier.type, numerics=numerics)
    key_path = os.path.join(work_dir, "key.json")
    if os.path.isdir(work_dir):
        old = None
        try:
            with open(key_path, encoding="utf-8") as f:
                old = json.load(f).get("key")
        except (OSError, ValueError, AttributeError):
            pass
        if old != key:
            if os.listdir(work_dir):
                log.info("%s: left by other settings or data, starting afresh", work_dir)
            shutil.rmtree(work_dir)
    os.makedirs(work_dir, exist_ok=True)
    if not os.path.isfile(key_path):
        atomic_write_json(key_path, {"key": key})


def _model_and_config(model_dir: str, method: str | None, config_path: str | None, overrides):
    from detect.model import load_model

    model = load_model(model_dir)
    cfg = load_config(config_path, overrides, base=model.config)
    trained = model.config.features
    for wanted, source in ((method, "--method"), (cfg.features.method, "features.method")):
        if wanted is not None and wanted != trained.method:
            raise UserError(
                f"{model_dir}: {source}={wanted} but the model's classifier was trained on {trained.method!r} features; "
                f"train a {wanted!r} model (--set features.method={wanted}) to test that method")
    if cfg.features.layer != model.svm_layer:
        raise UserError(f"{model_dir}: features.layer={cfg.features.layer} differs from the trained {model.svm_layer}")
    if tuple(cfg.network.levels) != tuple(model.config.network.levels):
        raise UserError(f"{model_dir}: network.levels={list(cfg.network.levels)} differs from the trained "
                        f"{list(model.config.network.levels)} (the classifier reads the pyramid in that order)")
    if cfg.classifier.type != model.classifier.name:
        raise UserError(f"{model_dir}: classifier.type={cfg.classifier.type} but the model's classifier is "
                        f"{model.classifier.name}; train a {cfg.classifier.type} model to test that")
    model.config = cfg
    return model, cfg


def default_test_dir(model_dir: str, method: str) -> str:
    """Where test_net writes when no ``--out`` is given: ``<name>/test_<method>`` beside a
    model directory called ``model`` (the tools' layout, ``output/<name>/model``), and
    ``<dir>_test_<method>`` beside any other, so that two models in one folder never
    write over each other's results."""
    parent, base = os.path.split(os.path.abspath(model_dir))
    return os.path.join(parent, f"test_{method}" if base == "model" else f"{base}_test_{method}")


def test(model_dir: str, method: str | None = None, num_images: int | None = None, out_dir: str | None = None,
         config_path: str | None = None, overrides=None, progress: bool = True):
    """Detect on the test set and evaluate by ``test.metric``; returns (results dict,
    output directory).

    Under torchrun every process detects on its shard of the images, then rank 0 reads
    every image's detections back and evaluates them; the other processes return
    ``(None, output directory)`` (:mod:`detect.distributed`)."""
    from detect import distributed
    from detect.config import config_to_dict, keyed_settings
    from detect.detector_api import Detector
    from detect.evaluation import METRICS, write_voc_results
    from detect.testing import median_timings, run_test

    if distributed.world_from_env().parallel:
        # the process group's backend follows the device the network runs on
        distributed.init(_model_and_config(model_dir, method, config_path, overrides)[1].features.device)
    world = distributed.current()
    progress = progress and world.is_main
    detector = Detector.load(model_dir, device=None, overrides=overrides, config_path=config_path, method=method)
    model, cfg = detector.model, detector.config
    dataset = open_dataset(cfg, cfg.data.test_set, num_images)
    if tuple(dataset.classes) != tuple(model.classes):
        raise UserError(f"{cfg.data.root}: classes {dataset.classes} differ from the model's {model.classes}")
    out_dir = out_dir or default_test_dir(model_dir, cfg.features.method)
    os.makedirs(out_dir, exist_ok=True)
    if world.is_main:
        save_config(cfg, os.path.join(out_dir, "config.yaml"))
    store = build_proposal_store(cfg, dataset, progress)
    # what every image's detections depend on besides the image itself; test.metric only
    # changes how they are scored, so it stays out (a cache written before the setting
    # existed keeps its key)
    test_settings = {k: v for k, v in config_to_dict(cfg.test).items() if k != "metric"}
    det_key = {"model": model.digest, "layout": 1, "proposal_store": proposal_key(cfg),
               "numerics": _layer_numerics(detector.features),
               **{s: keyed_settings(cfg)[s] for s in ("network", "proposals", "features")},
               "test": test_settings}
    if world.parallel:
        run_test(detector.detect_with_timings, dataset, store, world.shard(dataset.image_ids), out_dir, progress,
                 key=det_key, save_all=False)
        distributed.barrier()
        if not world.is_main:
            return None, out_dir
    dets, timings = run_test(detector.detect_with_timings, dataset, store, dataset.image_ids, out_dir, progress,
                             key=det_key)
    store.wait()
    write_voc_results(out_dir, cfg.data.test_set, model.classes, dataset.image_ids,
                      [d.boxes for d in dets], [d.labels for d in dets], [d.scores for d in dets])
    ev = _evaluate(cfg.test.metric, dets, dataset, model.classes)
    _plot(ev, model.classes, os.path.join(out_dir, "pr_curves.png"),
          f"{cfg.name} ({cfg.features.method}), {METRICS[cfg.test.metric].title} {ev['map']:.3f}")
    results = {
        "method": cfg.features.method,
        "config": cfg.name,
        "model": os.path.abspath(model_dir),
        "model_digest": model.digest,
        "image_set": cfg.data.test_set,
        "num_images": len(dataset),
        **_metric_results(ev, model.classes),
        "seconds_per_image": median_timings(timings),
        "scales": list(cfg.features.scales),
        "layer": cfg.features.layer,
        "classifier": model.classifier.name,
        "bbox_regression": model.regressor is not None,
        # the instruction set of this process's CPU kernels (sppcore/kernels.py)
        "cpu_kernels": cpu_kernels(),
    }
    atomic_write_json(os.path.join(out_dir, "results.json"), results)
    results["table"] = _table(ev, model.classes)
    return results, out_dir


def cpu_kernels() -> str:
    """torch's word for the instruction set of its CPU kernels here (``AVX2``, ``AVX512``,
    ``DEFAULT`` ...; sppcore/kernels.py pins it at AVX2 for the tools)."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def _evaluate(metric: str, dets, dataset, classes) -> dict:
    """``dets`` (per image of ``dataset``, in order) scored by ``metric``
    (:func:`detect.evaluation.evaluate_detections`)."""
    from detect.evaluation import evaluate_detections

    gt_boxes, gt_labels, gt_difficult = dataset.gt_lists()
    return evaluate_detections(metric, [d.boxes for d in dets], [d.labels for d in dets], [d.scores for d in dets],
                               gt_boxes, gt_labels, gt_difficult, classes)


def _metric_results(ev: dict, classes) -> dict:
    """The JSON fields of an evaluation: ``metric``, ``map`` (its main number),
    ``ap_per_class`` and, for COCO, ``ap50`` and ``ap75``."""
    out = {"metric": ev["metric"], "map": float(ev["map"]),
           "ap_per_class": {name: (None if np.isnan(ap) else float(ap)) for name, ap in zip(classes, ev["ap"])}}
    out.update({k: float(ev[k]) for k in ("ap50", "ap75") if k in ev})
    return out


def _table(ev: dict, classes) -> str:
    from detect.evaluation import METRICS, format_ap_table

    extra = "".join(f"\n{k.upper():<{max([len(c) for c in classes] + [5])}}  {ev[k]:6.3f}"
                    for k in ("ap50", "ap75") if k in ev)
    return f"{METRICS[ev['metric']].title}\n{format_ap_table(ev, classes)}{extra}"


def _plot(ev: dict, classes, path: str, title: str) -> None:
    """The precision-recall plot (VOC metrics: COCO's curves are per IoU threshold)."""
    from detect.evaluation import plot_pr_curves

    if "precision" in ev:
        plot_pr_curves(ev, classes, path, title=title)
    elif os.path.exists(path):
        os.remove(path)  # a plot left by another metric's run would not match results.json


def reval(test_dir: str, metric: str | None = None, out_path: str | None = None) -> tuple[dict, str]:
    """Re-score a test run's saved detections (``<test_dir>/detections.npz``) by
    ``metric`` (default: the run's ``test.metric``) against the dataset of the config
    saved beside them, without the network; writes ``reval_<metric>.json`` (default in
    ``test_dir``) and returns (results dict with the AP ``table``, its path)."""
    from detect.detector import split_detections
    from sppcore.fileio import load_npz

    det_path, cfg_path = os.path.join(test_dir, "detections.npz"), os.path.join(test_dir, "config.yaml")
    for path in (det_path, cfg_path):
        if not os.path.isfile(path):
            raise UserError(f"{path}: not found; {test_dir} is not the output directory of tools/test_net.py")
    cfg = load_config(cfg_path)
    metric = metric or cfg.test.metric
    arrays = load_npz(det_path)
    image_ids = [str(i) for i in arrays["image_ids"]]
    dataset = open_dataset(cfg, cfg.data.test_set)
    missing = sorted(set(image_ids) - set(dataset.image_ids))
    if missing:
        raise UserError(f"{det_path}: {len(missing)} images not in {cfg.data.root}/{cfg.data.test_set} "
                        f"(first: {missing[0]})")
    dataset = dataset.subset(image_ids)
    dets = split_detections(arrays, len(image_ids))
    ev = _evaluate(metric, dets, dataset, dataset.classes)
    results = {"detections": os.path.abspath(det_path), "image_set": cfg.data.test_set,
               "num_images": len(image_ids), **_metric_results(ev, dataset.classes)}
    out_path = out_path or os.path.join(test_dir, f"reval_{metric}.json")
    atomic_write_json(out_path, results)
    results["table"] = _table(ev, dataset.classes)
    return results, out_path


def demo(model_dir: str, image_path: str, out_path: str | None = None, threshold: float | None = None,
         config_path: str | None = None, overrides=None, top: int | None = None):
    """Detections on one image (score >= ``threshold``, default the classifier's
    ``show_threshold``: 0 for SVM margins, 0.5 for softmax probabilities; the ``top`` best
    when given), drawn to a PNG; returns ([(class, score, box)], png path)."""
    from detect.detector_api import Detector
    from detect.visualize import draw_detections

    detector = Detector.load(model_dir, device=None, overrides=overrides, config_path=config_path)
    image = detector.load_image(image_path)
    det = detector(image)
    if threshold is None:
        threshold = detector.model.classifier.show_threshold
    scores, labels, boxes = det["scores"], det["labels"], det["boxes"]
    keep = np.flatnonzero(scores >= threshold)
    keep = keep[np.argsort(-scores[keep], kind="stable")][:top]
    rows = [(detector.classes[labels[i]], float(scores[i]), boxes[i].tolist()) for i in keep]
    if out_path is None:
        stem = os.path.splitext(os.path.basename(image_path))[0]
        out_path = f"{stem}_detections.png"
    draw_detections(image, [r[2] for r in rows], [r[0] for r in rows], [r[1] for r in rows], out_path)
    return rows, out_path


def pretrained_network_path(cfg: Config) -> str:
    return cfg.pretrain.out or os.path.join(cfg.output_dir, cfg.name, "pretrain", "network.npz")


def _refuse_torchrun(stage: str, tool: str) -> None:
    """A one-line error for a sequential stage started as several processes (each would
    train the same network and write the same files)."""
    from detect.distributed import world_from_env

    if world_from_env().parallel:
        raise UserError(f"{stage} runs as one process (its SGD steps are sequential); start {tool} without torchrun")


def pretraining_settings_key(cfg: Config) -> dict:
    """The part of a pretrained network's key that the config alone decides: the
    settings, the classes, the seed, the CPU kernels (and the GPU's numerics when trained
    on one). :func:`pretraining_key` adds the images."""
    from detect.config import config_to_dict

    if len(cfg.pretrain.image_scales) not in (0, 2):
        raise UserError(f"pretrain.image_scales: give two shorter-side bounds [lo, hi] or none, got {list(cfg.pretrain.image_scales)}")
    # the network's settings without its levels, and the levels beside them: the key's
    # layout from before the levels moved into the network section, so that earlier
    # pretrained networks stay valid
    network_settings = {k: v for k, v in config_to_dict(cfg.network).items() if k != "levels"}
    # pretrain.shipped says where a ready network may be found, never what it is: not keyed
    pretrain_settings = {k: v for k, v in config_to_dict(cfg.pretrain).items() if k != "shipped"}
    # the trained network depends on the instruction set of torch's CPU kernels and on its
    # threads (pretrain.threads, in the settings) beside the settings and the images, and,
    # trained on a GPU (features.device), on that and its TF32 settings
    return {"pretrain": pretrain_settings, "network": network_settings, "levels": list(cfg.network.levels),
            "classes": list(cfg.data.classes), "seed": cfg.seed, "cpu_kernels": cpu_kernels(),
            **_gpu_numerics(cfg.features.device)}


def pretraining_key(cfg: Config):
    """What a pretrained network depends on, unhashed: ``(key_parts, train_set,
    val_set)``; the network's key is ``stable_hash(key_parts)``."""
    import dataclasses

    data_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=cfg.pretrain.root)) if cfg.pretrain.root else cfg
    key_parts = pretraining_settings_key(cfg)
    train_ds = open_dataset(data_cfg, cfg.pretrain.train_set)
    val_ds = open_dataset(data_cfg, cfg.pretrain.val_set)
    key_parts.update(train=dataset_identity(train_ds), val=dataset_identity(val_ds))
    return key_parts, train_ds, val_ds


def run_pretraining(cfg: Config, compare: bool = False, progress: bool = True) -> dict:
    """Pretrain the configured trunk (multi-size; with ``compare`` also single-size) and
    save the multi-size network; cached: a finished run with the same settings and
    pretraining images is reused. The output directory is sealed (network, its
    description, the report) with that key: a run killed while writing, or a network file
    left by a run with other settings, is never reused."""
    import dataclasses
    import json

    from detect.features import intra_op_threads
    from detect.pretrain import CropSampler, pretrain
    from detect.trunks import build_network, save_network
    from sppcore.fileio import read_seal, seal_directory, stable_hash, unseal_directory

    _refuse_torchrun("pretraining", "tools/pretrain.py")
    path = pretrained_network_path(cfg)
    out_dir = os.path.dirname(os.path.abspath(path))
    report_path = os.path.join(out_dir, "pretrain_report.json")
    key_parts, train_ds, val_ds = pretraining_key(cfg)
    pretrain_settings, kernels = key_parts["pretrain"], key_parts["cpu_kernels"]
    key = stable_hash(key_parts)
    sealed_files = [os.path.basename(path), os.path.basename(path) + ".json", os.path.basename(report_path)]
    runs_wanted = [tuple(cfg.pretrain.sizes)] + ([tuple(cfg.pretrain.sizes[:1])] if compare and len(cfg.pretrain.sizes) > 1 else [])
    runs = []  # finished runs with these settings are kept: only the missing ones train
    manifest, _ = read_seal(out_dir)
    installed = False
    if cfg.pretrain.shipped and (manifest is None or manifest["key"] != stable_hash(key)):
        installed = install_shipped_network(cfg.pretrain.shipped, key_parts, out_dir, path, report_path, key)
        if installed:
            manifest, _ = read_seal(out_dir)
    shipped_from = None  # the shipped directory the kept multi-size network came from
    if manifest is not None and manifest["key"] == stable_hash(key) and set(manifest["files"]) == set(sealed_files):
        with open(report_path, encoding="utf-8") as f:
            report = json.load(f)
        if report.get("shipped") and not cfg.pretrain.shipped:
            # pretrain.shipped="" asks for a network trained here, not the shipped copy
            log.info("pretraining: %s is the shipped network and pretrain.shipped is empty: training it here", path)
        elif {tuple(r["sizes"]) for r in report["runs"]} >= set(runs_wanted):
            if not installed:
                log.info("pretraining: reusing %s", path)
            return report
        else:
            runs = [r for r in report["runs"] if tuple(r["sizes"]) in runs_wanted]
            shipped_from = report.get("shipped")
    done = {tuple(r["sizes"]) for r in runs}
    os.makedirs(out_dir, exist_ok=True)
    unseal_directory(out_dir)
    save_config(cfg, os.path.join(out_dir, "config.yaml"))
    p = cfg.pretrain
    train_sampler = CropSampler(train_ds, jitter=p.jitter, background_per_image=p.background_per_image)
    val_sampler = CropSampler(val_ds, jitter=p.jitter, background_per_image=p.background_per_image)
    for run, sizes in enumerate(s for s in runs_wanted if s not in done):
        kill_point("pretrain_run", run)
        trunk, head = build_network(dataclasses.replace(cfg.network, weights="random"))
        head.add_classifier(len(train_ds.classes) + 1, seed=cfg.network.init_seed)
        with intra_op_threads(p.threads):
            result = pretrain(trunk, head, cfg.network.levels, train_sampler, val_sampler, sizes=sizes,
                              epochs=p.epochs, batch_size=p.batch_size, lr=p.lr,
                              weight_decay=p.weight_decay, seed=cfg.seed, eval_size=p.sizes[0], progress=progress,
                              image_scales=tuple(p.image_scales) or None, device=cfg.features.device)
        runs.append({"sizes": list(sizes), "val_accuracy": result.val_accuracy,
                     "val_image_accuracy": None if math.isnan(result.val_image_accuracy) else result.val_image_accuracy,
                     "seconds": result.seconds,
                     "history": result.history})
        log.info("pretraining %s: validation accuracy %.4f in %.0f s", sizes, result.val_accuracy, result.seconds)
        if sizes == runs_wanted[0]:
            save_network(trunk, head, path, extra={"pretrain": pretrain_settings,
                                                   "val_accuracy": result.val_accuracy,
                                                   "fc8_classes": list(train_ds.classes)})
    runs.sort(key=lambda r: runs_wanted.index(tuple(r["sizes"])))
    report = {"key": key, "network": path, "classes": list(train_ds.classes), "runs": runs,
              "train_images": len(train_ds), "val_images": len(val_ds), "cpu_kernels": kernels}
    if shipped_from and tuple(cfg.pretrain.sizes) in done:
        report["shipped"] = shipped_from
    atomic_write_json(report_path, report)
    seal_directory(out_dir, sealed_files, key)
    return report


# the files of a shipped pretrained network (tools/pretrain.py's sealed output directory,
# plus the unhashed key it was trained under)
SHIPPED_FILES = ("network.npz", "network.npz.json", "pretrain_report.json")
SHIPPED_KEY_FILE = "pretrain_key.json"


# settings of a pretraining key that say where files are, not what the network is (the
# images are in the key by their digests; pretraining starts from random weights whatever
# network.weights says): a shipped network is compared without them
LOCATION_SETTINGS = {"pretrain": ("root", "out"), "network": ("weights",)}


def _without_locations(key_parts: dict) -> dict:
    out = dict(key_parts)
    for part, names in LOCATION_SETTINGS.items():
        if isinstance(out.get(part), dict):
            out[part] = {k: v for k, v in out[part].items() if k not in names}
    return out


def shipped_key_differences(shipped_parts: dict, key_parts: dict) -> list[str]:
    """What differs between the key a shipped network was trained under and the one a run
    would train under, in words: the settings by name (``pretrain.epochs``), the image
    sets, the CPU kernels, ... (empty when they are equal). Where files are
    (:data:`LOCATION_SETTINGS`) is not compared."""
    shipped_parts, key_parts = _without_locations(shipped_parts), _without_locations(key_parts)
    out = []
    for part in sorted(set(shipped_parts) | set(key_parts)):
        a, b = shipped_parts.get(part), key_parts.get(part)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            names = sorted(n for n in set(a) | set(b) if a.get(n) != b.get(n))
            out.extend(f"{part}.{n}" for n in names)
        elif part in ("train", "val"):
            out.append(f"the pretraining {part} images (files or annotations)")
        else:
            out.append(part)
    return out


def install_shipped_network(shipped: str, key_parts: dict, out_dir: str, path: str, report_path: str,
                            key: str) -> bool:
    """Copy the network pretrained elsewhere in ``shipped`` (``pretrain.shipped``) into
    ``out_dir`` and seal it there with ``key`` when it was trained under ``key_parts``
    (the settings, the images' digests, the CPU kernels of the run that would otherwise
    train; where the files live aside, :data:`LOCATION_SETTINGS`) and its files have their
    sealed content; True when installed. A shipped network of another key, or damaged, is
    left alone with one log line saying why, and the caller trains."""
    import json

    from sppcore.fileio import atomic_copy, read_seal, seal_directory, stable_hash, unseal_directory

    manifest, reason = read_seal(shipped)
    if manifest is None:
        log.warning("pretraining: not using the shipped network (%s); training it", reason)
        return False
    try:
        with open(os.path.join(shipped, SHIPPED_KEY_FILE), encoding="utf-8") as f:
            shipped_parts = json.load(f)
    except (OSError, ValueError) as e:
        log.warning("pretraining: not using the shipped network (%s: unreadable, %s); training it",
                    os.path.join(shipped, SHIPPED_KEY_FILE), e)
        return False
    # sealed with the key its key file holds, and with every file (the seal's digests
    # cover the key file: an edited one never gets here)
    if (not isinstance(shipped_parts, dict) or manifest["key"] != stable_hash(stable_hash(shipped_parts))
            or set(manifest["files"]) != set(SHIPPED_FILES) | {SHIPPED_KEY_FILE}):
        log.warning("pretraining: not using the shipped network (%s: sealed with another key or other files "
                    "than %s holds); training it", shipped, SHIPPED_KEY_FILE)
        return False
    differences = shipped_key_differences(shipped_parts, key_parts)
    if differences:
        log.info("pretraining: the shipped network %s was trained under another key (%s); training it",
                 shipped, ", ".join(differences))
        return False
    os.makedirs(out_dir, exist_ok=True)
    unseal_directory(out_dir)
    atomic_copy(os.path.join(shipped, "network.npz"), path)
    atomic_copy(os.path.join(shipped, "network.npz.json"), path + ".json")
    with open(os.path.join(shipped, "pretrain_report.json"), encoding="utf-8") as f:
        report = json.load(f)
    report.update(network=path, shipped=shipped)  # the report names where it came from
    atomic_write_json(report_path, report)
    seal_directory(out_dir, [os.path.basename(p) for p in (path, path + ".json", report_path)], key)
    log.info("pretraining: using the network shipped in %s (trained with these settings, images and CPU "
             "kernels; pretrain.shipped=\"\" trains it here)", shipped)
    return True


def ship_pretrained_network(cfg: Config, target: str) -> str:
    """Write ``cfg``'s pretrained network (a finished ``tools/pretrain.py`` run of these
    settings; a UserError otherwise) with its unhashed key into ``target`` and seal it there: the directory ``pretrain.shipped`` names, which
    :func:`install_shipped_network` uses on another machine instead of training. Returns
    ``target``."""
    from sppcore.fileio import atomic_copy, read_seal, seal_directory, stable_hash, unseal_directory

    path = pretrained_network_path(cfg)
    out_dir = os.path.dirname(os.path.abspath(path))
    key_parts, _, _ = pretraining_key(cfg)
    key = stable_hash(key_parts)
    manifest, reason = read_seal(out_dir)
    if manifest is None or manifest["key"] != stable_hash(key):
        raise UserError(f"{out_dir}: no pretrained network of these settings to ship ({reason or 'another key'}); "
                        "run tools/pretrain.py first")
    os.makedirs(target, exist_ok=True)
    unseal_directory(target)
    sources = {"network.npz": path, "network.npz.json": path + ".json",
               "pretrain_report.json": os.path.join(out_dir, "pretrain_report.json")}
    for name, source in sources.items():
        atomic_copy(source, os.path.join(target, name))
    atomic_write_json(os.path.join(target, SHIPPED_KEY_FILE), key_parts)
    seal_directory(target, list(SHIPPED_FILES) + [SHIPPED_KEY_FILE], key)
    log.info("pretrained network shipped in %s (key %s)", target, key)
    return target


def run_finetuning(cfg: Config, out_path: str | None = None, progress: bool = True) -> tuple[str, dict]:
    """Fine-tune fc6/fc7/fc8 of ``cfg``'s network on the training set's pool5 vectors
    (SPP-net: pooled from the cached conv5 maps; R-CNN: its warped windows through the
    frozen conv layers); saves the network and returns (path, report).

    The network, its description and the report are sealed in their directory with the
    key of everything they depend on (the network, data, proposals, features and
    finetune settings, the seed, the training images and annotations, the starting
    weights): a finished fine-tuning of the same key is reused as it is, anything else
    (other settings, an interrupted run, a file edited since) trains again, resuming from
    its checkpoint when that belongs to the same key.

    Under torchrun (:mod:`detect.distributed`) every process computes the proposals and
    SPP-net's conv5 cache entries of its shard of the images; after a barrier rank 0
    fine-tunes (the SGD steps are sequential) reading them back, and returns what one
    process returns; the other processes return ``(out_path, None)`` and wait for rank 0
    at the final barrier (:func:`detect.distributed.finish`)."""
    import json

    import torch

    from detect import distributed
    from detect.feature_sources import WindowFeatures, network_digest
    from detect.features import intra_op_threads
    from detect.finetune import finetune_head
    from detect.trunks import save_network
    from sppcore.fileio import read_seal, seal_directory, stable_hash, unseal_directory

    world = distributed.init(cfg.features.device)
    progress = progress and world.is_main
    out_path = out_path or os.path.join(cfg.output_dir, cfg.name, "finetune", "network.npz")
    out_dir = os.path.dirname(os.path.abspath(out_path))
    report_path = os.path.splitext(out_path)[0] + "_report.json"
    sealed_files = [os.path.basename(p) for p in (out_path, out_path + ".json", report_path)]
    dataset = open_dataset(cfg, cfg.data.train_set)
    features = WindowFeatures.from_config(cfg, cache_root=os.path.join(cfg.cache_dir, "features"))
    extractor = features.extractor
    head = features.head
    if head.fc8 is None or head.fc8.out_features != len(dataset.classes) + 1:
        head.add_classifier(len(dataset.classes) + 1, seed=cfg.seed)
        head.to(extractor.device)
    # like pretraining, the fine-tuned layers depend on the CPU kernels and the threads
    # (finetune.threads, in the settings)
    key = _resume_key(cfg, ("network", "data", "proposals", "features", "finetune"), dataset_identity(dataset),
                      network_digest(features.trunk, head), cpu_kernels=cpu_kernels(),
                      **_gpu_numerics(cfg.features.device))
    manifest, _ = read_seal(out_dir)
    if manifest is not None and manifest["key"] == stable_hash(key) and set(manifest["files"]) == set(sealed_files):
        log.info("fine-tuning: reusing %s (fine-tuned with the same settings, data and network)", out_path)
        with open(report_path, encoding="utf-8") as f:
            return out_path, (json.load(f) if world.is_main else None)
    store = build_proposal_store(cfg, dataset, progress)
    if world.parallel:
        # the per-image part in parallel: conv5 maps of SPP-net's training images
        features.fill_conv_cache(dataset, world.shard(dataset.image_ids), progress)
        distributed.barrier()
        if not world.is_main:
            return out_path, None
    os.makedirs(out_dir, exist_ok=True)
    unseal_directory(out_dir)
    save_config(cfg, os.path.join(out_dir, "config.yaml"))
    # what the extractor pools windows from: SPP-net the cached conv5 maps, R-CNN the image
    source = features.source_fn(dataset)

    def pool_fn(image_id, windows):
        pooled, inverse = extractor.pool(source(image_id), windows)
        return pooled[torch.from_numpy(inverse).to(pooled.device)]

    # an interrupted run resumes from this checkpoint if it was fine-tuning the same thing
    checkpoint = os.path.splitext(out_path)[0] + "_state.pt"
    with intra_op_threads(cfg.finetune.threads):
        report = finetune_head(head, pool_fn, dataset, store, cfg.finetune, seed=cfg.seed, progress=progress,
                               checkpoint=checkpoint, key=key)
    report["method"] = cfg.features.method
    # fc8's row k + 1 is dataset.classes[k] (detect.finetune.label_windows): what
    # classifier.type softmax checks before it scores with this fc8
    save_network(features.trunk, head, out_path, extra={"finetune_iterations": report["iterations"],
                                                        "fc8_classes": list(dataset.classes)})
    atomic_write_json(report_path, report)
    if os.path.exists(checkpoint):
        os.remove(checkpoint)
    seal_directory(out_dir, sealed_files, key)
    return out_path, report
