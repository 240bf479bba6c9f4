"""One object a user holds: a trained model directory as a callable detector.

The torchvision detection models' interface on a trained SPP-net or R-CNN model::

    from detect.detector_api import Detector

    detector = Detector.load("output/default/spp/model")      # sealed model directory
    out = detector(image)            # RGB uint8 [H, W, 3] numpy array, or an image path
    out["boxes"], out["labels"], out["scores"]                 # detector.classes[label]
    outs = detector([image_a, "b.jpg"])                        # a list in, a list out

Every script goes through it: ``tools/demo.py`` (:func:`detect.pipeline.demo`),
``tools/test_net.py`` (:func:`detect.pipeline.test`, whose test loop is
:func:`detect.testing.run_test` around :meth:`Detector.detect_with_timings`) and the
benchmarks. Per image: selective-search proposals (unless given) -> window features
(SPP-net or R-CNN, as the model was trained) -> class scores (the model's classifier: SVMs
or the fine-tuned softmax) -> per-class box regression ->
per-class threshold, NMS and top-k with the model's ``test`` settings. On a GPU the steps
after the network run there too (:mod:`detect.device_postprocess`) and only the
detections come back to the host.
"""
from __future__ import annotations

import os
import time
from typing import Sequence

import numpy as np

from detect.testing import WindowScores, detections_from_window_scores, score_image
from sppcore.errors import UserError

__all__ = ["Detector"]


def _check_image(image: np.ndarray, where: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise UserError(f"{where}: expected an RGB uint8 array [H, W, 3], got {image.dtype} {list(image.shape)}")
    return image


def _check_proposals(boxes, where: str) -> np.ndarray:
    boxes = np.asarray(boxes, np.float32)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.isfinite(boxes).all():
        raise UserError(f"{where}: proposals must be finite float [M, 4] (x1, y1, x2, y2), got {list(boxes.shape)}")
    return boxes


class Detector:
    """A trained detector: ``detector(images, proposals=None)``.

    Input: one image (an RGB uint8 numpy array [H, W, 3], or the path of an image file) or
    a list of them. Output: for one image a dict, for a list a list of dicts (one per
    image, in order), like torchvision's detection models but of numpy arrays:

    * ``boxes``: float32 [N, 4], ``(x1, y1, x2, y2)`` in absolute pixels of the image, in
      the project's internal 0-based continuous convention (a box covering pixel columns
      1..w of the devkit's 1-based inclusive boxes is ``x1 = 0, x2 = w``;
      :func:`sppcore.boxes.internal_to_voc` converts to the devkit's);
    * ``labels``: int64 [N], indices into :attr:`classes`;
    * ``scores``: float32 [N], the class's score from the model's classifier: an SVM
      margin (not a probability) or, for a ``softmax`` model, the class's probability;
      higher is surer either way.

    Detections are per class after NMS, at most ``test.max_per_class`` per class, grouped
    by class. ``proposals``: optional precomputed windows per image (float32 [M, 4], same
    convention; a list of them for a list of images), which skips selective search;
    M = 0 gives no detections.
    """

    def __init__(self, model, features, postprocess: str = "auto"):
        """``model``: a :class:`detect.model.DetectionModel` whose ``config`` holds the
        settings to test with; ``features``: the matching
        :class:`detect.feature_sources.WindowFeatures`. :meth:`load` builds both.
        ``postprocess``: where scoring, box regression and NMS run: ``host`` (numpy, the
        features copied back), ``device`` (torch on the network's device, only the
        detections copied back: :mod:`detect.device_postprocess`) or ``auto`` (device on a
        GPU, host on the CPU, where numpy is the faster)."""
        if postprocess not in ("auto", "host", "device"):
            raise ValueError(f"postprocess must be auto, host or device, got {postprocess!r}")
        self.model = model
        self.features = features
        if postprocess == "auto":
            postprocess = "host" if features.extractor.device.type == "cpu" else "device"
        self.postprocess_on = postprocess

    @classmethod
    def load(cls, model_dir: str, device: str | None = "cpu", overrides: Sequence[str] | None = None,
             config_path: str | None = None, method: str | None = None, postprocess: str = "auto") -> "Detector":
        """The model in ``model_dir`` (sealed by ``tools/train_svm.py``; a damaged or
        unsealed directory is a :class:`UserError`), its network on ``device`` (``cpu``,
        ``cuda``, ``cuda:N``; None: the device in the model's config). ``overrides``
        (``["test.nms_iou=0.4", ...]``) and ``config_path`` change test-time settings;
        settings the classifier depends on (method, layer, pyramid levels, classifier
        type) must stay the model's. ``postprocess``: as for the constructor."""
        from detect.feature_sources import WindowFeatures
        from detect.pipeline import _model_and_config

        overrides = list(overrides or [])
        if device is not None:
            overrides.append(f"features.device={device}")
        model, cfg = _model_and_config(model_dir, method, config_path, overrides)
        return cls(model, WindowFeatures.from_config(cfg, network_file=model.network_file), postprocess=postprocess)

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names; ``labels`` index into them."""
        return tuple(self.model.classes)

    @property
    def config(self):
        """The resolved :class:`detect.config.Config` the detector runs with."""
        return self.model.config

    # ------------------------------------------------------------------ one image, in steps

    def load_image(self, image) -> np.ndarray:
        """An image argument as an RGB uint8 [H, W, 3] array (a path is read)."""
        if isinstance(image, (str, os.PathLike)):
            from sppcore.images import load_image

            return load_image(os.fspath(image))
        return _check_image(image, "image")

    def propose(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """Selective-search windows of an image with the config's proposal settings:
        (float32 [M, 4], seconds)."""
        from proposals import compute_proposals

        t0 = time.perf_counter()
        boxes = compute_proposals(image, self.config.proposals)
        return _check_proposals(boxes, "proposals"), time.perf_counter() - t0

    def _image_and_proposals(self, image, proposals):
        """(the image as an array, its checked proposals, the seconds selective search took
        when it ran here, else None)."""
        image = self.load_image(image)
        seconds = None
        if proposals is None:
            proposals, seconds = self.propose(image)
        return image, _check_proposals(proposals, "proposals"), seconds

    def score(self, image, proposals=None) -> WindowScores:
        """Every window's class scores [M, K] and per-class regressed boxes [M, K, 4] (None
        without regressors), before NMS; ``timings`` holds the seconds per stage
        (``proposals`` too when they were computed here). With :meth:`postprocess`, the
        detections with and without box regression come from the same scores. With the
        post-processing on the device they are computed there, and only they (not the
        windows' features) come back."""
        image, proposals, seconds = self._image_and_proposals(image, proposals)
        if self.postprocess_on == "device":
            # scores and regressed boxes computed on the device; only they come back
            from detect.device_postprocess import score_image_on_device

            _, scores, class_boxes, timings = score_image_on_device(self.model, self.features.extractor, image,
                                                                    proposals)
            scored = WindowScores(proposals, scores.cpu().numpy(),
                                  None if class_boxes is None else class_boxes.cpu().numpy(),
                                  tuple(image.shape[:2]), timings)
        else:
            scored = score_image(self.model, self.features.extract, image, proposals)
        if seconds is not None:
            scored.timings["proposals"] = seconds
        return scored

    def postprocess(self, scored: WindowScores, regress: bool = True) -> tuple[dict, float]:
        """Threshold, NMS and top-k of :meth:`score`'s output, on the regressed boxes
        unless ``regress`` is False: (the output dict, seconds)."""
        det, seconds = detections_from_window_scores(self.model, scored, regress)
        return {"boxes": det.boxes, "labels": det.labels, "scores": det.scores}, seconds

    def detect_with_timings(self, image, proposals=None):
        """(:class:`detect.detector.Detections`, {stage: seconds}) of one image: what the
        test loop (:func:`detect.testing.run_test`) calls."""
        from detect.detector import Detections

        if self.postprocess_on == "device":
            from detect.device_postprocess import detect_image_on_device

            image, proposals, seconds = self._image_and_proposals(image, proposals)
            det, timings = detect_image_on_device(self.model, self.features.extractor, image, proposals)
            if seconds is not None:
                timings["proposals"] = seconds
            return det, timings
        scored = self.score(image, proposals)
        out, nms_s = self.postprocess(scored)
        return Detections(out["boxes"], out["labels"], out["scores"]), {**scored.timings, "nms": nms_s}

    # ------------------------------------------------------------------------ the call

    def __call__(self, images, proposals=None):
        """See the class docstring: a dict for one image, a list of dicts for a list."""
        if isinstance(images, (list, tuple)):
            if proposals is not None and len(proposals) != len(images):
                raise UserError(f"proposals: {len(proposals)} entries for {len(images)} images")
            return [self._detect_one(image, None if proposals is None else proposals[i])
                    for i, image in enumerate(images)]
        return self._detect_one(images, proposals)

    def _detect_one(self, image, proposals) -> dict:
        det, _ = self.detect_with_timings(image, proposals)
        return {"boxes": det.boxes, "labels": det.labels, "scores": det.scores}

    def __repr__(self) -> str:
        cfg = self.config
        return (f"Detector({cfg.name!r}, method={cfg.features.method}, {self.model.classifier.name} on "
                f"{self.model.classifier.layer}, "
                f"{len(self.classes)} classes, model {self.model.digest})")
