"""Hard-negative mining for the per-class linear SVMs (R-CNN / SPP-net training), numpy only.

The procedure of R-CNN's ``rcnn_train.m``, which SPP-net reuses (REFERENCE.md section 2):

* positives: the ground-truth boxes' features, added once (the caller decides whether
  "difficult" objects count);
* negatives of class k: proposals with IoU < 0.3 to every ground truth of class k
  (:func:`select_negative_candidates`; SPP-net also thins them with a 0.7 overlap rule);
* one pass over the training images: each image's candidates are scored with the current
  models, those scoring above -1.0001 ("hard") join the class's cache; once a class has
  gathered 2,000 new hard negatives its SVM is retrained (warm-started from the previous
  duals) and cached negatives scoring below -1.2 ("easy") are evicted; at the end every
  class is retrained once more.

Features are rescaled by one global factor so that their mean L2 norm is 20
(:func:`compute_feature_scale`); the returned weights fold that factor in, so scores are
``features @ W.T + b`` on the features as the network gives them.

Memory: the same background window is a hard negative for many classes, so the cached
rows live once in a shared, paged store (:class:`FeatureStore`) keyed by ``(image_key,
proposal index)``, and each class holds only row ids; a row is freed when no class refers
to it any more. Rows are stored already rescaled, in float16 by default: with a mean norm
of 20 no activation comes near float16's limit of 65,504.
"""
from __future__ import annotations

import dataclasses
import heapq
import logging
import time

import numpy as np

from sppcore.boxes import as_boxes, box_area, box_iou
from sppcore.errors import UserError
from sppcore.matcher import BACKGROUND, svm_negative_matcher
from svm.config import SVMConfig
from svm.solver import train_linear_svm

__all__ = [
    "NEGATIVE_IOU",
    "NEGATIVE_OVERLAP",
    "MiningStateError",
    "compute_feature_scale",
    "feature_norms",
    "feature_scale_from_norms",
    "select_negative_candidates",
    "select_negative_candidates_reference",
    "FeatureStore",
    "HardNegativeMiner",
]

log = logging.getLogger(__name__)

# R-CNN: a proposal is a negative of class k when its IoU with every ground truth of k is
# below this (chosen by grid search over {0, 0.1, ..., 0.5})
NEGATIVE_IOU = 0.3
# SPP-net: a negative overlapping an already kept negative by more than this is dropped
NEGATIVE_OVERLAP = 0.7
# version of the state_dict layout
STATE_VERSION = 1
# target size of one page of the feature store
_PAGE_BYTES = 32 << 20
# ... and at most this many rows, so that small features do not allocate 32 MiB at once
_MAX_PAGE_ROWS = 4096
# largest float32 copy of one class's cached rows made for the solver (else it converts
# float16 rows block by block, about 4x slower)
_FLOAT32_COPY_BYTES = 4 << 30
# rows whose scores the end-of-training invariant check recomputes, per class
_INVARIANT_ROWS = 256


class MiningStateError(UserError):
    """A saved mining state does not fit (another version, class count or feature size)."""


def feature_norms(features: np.ndarray) -> np.ndarray:
    """L2 norm of every row of ``features`` [N, D] (any float dtype), float64 [N],
    accumulated in float64 a block of rows at a time."""
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"feature_norms needs an [N, D] array, got shape {features.shape}")
    norms = np.empty(len(features), dtype=np.float64)
    for start in range(0, len(features), 4096):
        chunk = np.asarray(features[start : start + 4096], dtype=np.float64)
        norms[start : start + len(chunk)] = np.sqrt(np.einsum("ij,ij->i", chunk, chunk))
    return norms


def feature_scale_from_norms(norms: np.ndarray, target_norm: float = 20.0) -> float:
    """:func:`compute_feature_scale` from the rows' norms alone (what a training run keeps
    of its sample of windows: one number per window instead of its whole feature)."""
    norms = np.asarray(norms, dtype=np.float64).reshape(-1)
    if len(norms) == 0:
        raise ValueError("compute_feature_scale needs a non-empty sample of windows")
    mean = float(norms.mean())
    if not np.isfinite(mean) or mean <= 0.0:
        raise ValueError(f"features have mean L2 norm {mean}: cannot rescale to {target_norm}")
    return float(target_norm) / mean


def compute_feature_scale(features: np.ndarray, target_norm: float = 20.0) -> float:
    """Factor that brings the mean L2 norm of ``features`` [N, D] to ``target_norm``
    (R-CNN's ``feat_norm_mean``: one global factor, computed on a sample of windows).

    Raises ValueError for no rows or an all-zero sample.
    """
    features = np.asarray(features)
    if features.ndim != 2 or len(features) == 0:
        raise ValueError(f"compute_feature_scale needs a non-empty [N, D] array, got shape {features.shape}")
    return feature_scale_from_norms(feature_norms(features), target_norm)


def _check_boxes_and_labels(proposal_boxes, gt_boxes, gt_labels, num_classes):
    proposals = as_boxes(proposal_boxes)
    gt = as_boxes(gt_boxes)
    labels = np.asarray(gt_labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(gt):
        raise ValueError(f"{len(gt)} ground-truth boxes but {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"ground-truth labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}")
    return proposals, gt, labels


def _iou_above(boxes: np.ndarray, threshold: float, chunk: int = 256) -> np.ndarray:
    """bool [N, N]: pairwise IoU ``> threshold``, tested as ``(1 + t) * inter > t * (area_i
    + area_j)`` (no division; 2-3x faster than thresholding :func:`box_iou`, which the
    reference uses), in row chunks of float64 work arrays."""
    b = np.asarray(boxes, dtype=np.float64)
    area = box_area(b)
    out = np.empty((len(b), len(b)), dtype=bool)
    for s in range(0, len(b), chunk):
        e = min(len(b), s + chunk)
        inter = np.minimum(b[s:e, None, 2], b[None, :, 2])
        inter -= np.maximum(b[s:e, None, 0], b[None, :, 0])
        np.maximum(inter, 0.0, out=inter)
        height = np.minimum(b[s:e, None, 3], b[None, :, 3])
        height -= np.maximum(b[s:e, None, 1], b[None, :, 1])
        np.maximum(height, 0.0, out=height)
        inter *= height
        inter *= 1.0 + threshold
        sum_areas = height  # reuse the buffer
        np.add(area[s:e, None], area[None, :], out=sum_areas)
        sum_areas *= threshold
        np.greater(inter, sum_areas, out=out[s:e])
    return out


def _greedy_thin(base: np.ndarray, too_close: np.ndarray) -> np.ndarray:
    """Walk ``base`` [N] bool in index order; keep a row unless it is ``too_close`` [N, N]
    to a row kept before it."""
    keep = np.zeros_like(base)
    blocked = ~base
    for i in np.flatnonzero(base):
        if not blocked[i]:
            keep[i] = True
            blocked |= too_close[i]
    return keep


def select_negative_candidates(
    proposal_boxes,
    gt_boxes,
    gt_labels,
    num_classes: int,
    negative_iou: float = NEGATIVE_IOU,
    negative_overlap: float = NEGATIVE_OVERLAP,
) -> np.ndarray:
    """Which proposals are negatives of which class: bool [K, N].

    Args:
        proposal_boxes: float32 [N, 4] (x1, y1, x2, y2), one image.
        gt_boxes: float32 [G, 4] of the same image; gt_labels: int [G] in [0, K).
            Pass every ground truth, "difficult" ones included, so that no window on an
            object becomes a negative.
        negative_iou: proposal i is a candidate of class k when its IoU with every ground
            truth of class k is ``< negative_iou`` (R-CNN: 0.3; IoU exactly 0.3 is not;
            :func:`sppcore.matcher.svm_negative_matcher`).
        negative_overlap: SPP-net's thinning, per class: candidates are walked in proposal
            order and one is dropped when its IoU with an earlier KEPT candidate of the
            same class is ``> negative_overlap`` (greedy, so the first of a cluster of
            near-duplicates survives); ``>= 1`` turns the rule off.
    """
    proposals, gt, labels = _check_boxes_and_labels(proposal_boxes, gt_boxes, gt_labels, num_classes)
    n = len(proposals)
    out = np.zeros((num_classes, n), dtype=bool)
    if n == 0 or num_classes == 0:
        return out
    iou_gt = box_iou(proposals, gt)  # [N, G]
    base = svm_negative_matcher(negative_iou).labels_per_class(iou_gt, labels, num_classes) == BACKGROUND
    if negative_overlap >= 1.0:
        return base
    too_close = _iou_above(proposals, negative_overlap)
    # classes without ground truth in the image share one candidate set: thin it once
    thinned: dict[bytes, np.ndarray] = {}
    for k in range(num_classes):
        key = np.packbits(base[k]).tobytes()
        if key not in thinned:
            thinned[key] = _greedy_thin(base[k], too_close)
        out[k] = thinned[key]
    return out


def select_negative_candidates_reference(
    proposal_boxes, gt_boxes, gt_labels, num_classes: int,
    negative_iou: float = NEGATIVE_IOU, negative_overlap: float = NEGATIVE_OVERLAP,
) -> np.ndarray:
    """Slow, obviously correct :func:`select_negative_candidates` (loops over pairs)."""
    proposals, gt, labels = _check_boxes_and_labels(proposal_boxes, gt_boxes, gt_labels, num_classes)
    out = np.zeros((num_classes, len(proposals)), dtype=bool)
    for k in range(num_classes):
        kept: list[int] = []
        for i in range(len(proposals)):
            p = proposals[i : i + 1]
            if any(box_iou(p, gt[g : g + 1])[0, 0] >= negative_iou for g in range(len(gt)) if labels[g] == k):
                continue
            if negative_overlap < 1.0 and any(box_iou(p, proposals[j : j + 1])[0, 0] > negative_overlap for j in kept):
                continue
            kept.append(i)
            out[k, i] = True
    return out


class FeatureStore:
    """Deduplicated rows ``(image code, index) -> feature row`` in fixed-size pages.

    Rows are reference-counted (one count per class cache holding them) and their slot is
    reused, lowest first, once the count drops to zero; pages are never reallocated, so
    growing the store never copies it.
    """

    def __init__(self, feat_dim: int, dtype: str = "float16", page_rows: int | None = None):
        self.feat_dim = int(feat_dim)
        self.dtype = np.dtype(dtype)
        row_bytes = self.feat_dim * self.dtype.itemsize
        self.page_rows = int(page_rows or min(_MAX_PAGE_ROWS, max(64, _PAGE_BYTES // row_bytes)))
        self.pages: list[np.ndarray] = []
        self.slot_image = np.zeros(0, dtype=np.int64)  # -1: free slot
        self.slot_index = np.zeros(0, dtype=np.int64)
        self.refcount = np.zeros(0, dtype=np.int64)
        self._free: list[int] = []
        self._slots: dict[tuple[int, int], int] = {}

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def capacity(self) -> int:
        return len(self.pages) * self.page_rows

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.pages)

    def lookup(self, image_code: int, index: int) -> int:
        """Slot of a stored row, or -1."""
        return self._slots.get((image_code, index), -1)

    def _grow(self) -> None:
        start = self.capacity
        self.pages.append(np.zeros((self.page_rows, self.feat_dim), dtype=self.dtype))
        grow = lambda a, v: np.concatenate([a, np.full(self.page_rows, v, dtype=np.int64)])  # noqa: E731
        self.slot_image, self.slot_index = grow(self.slot_image, -1), grow(self.slot_index, -1)
        self.refcount = grow(self.refcount, 0)
        for slot in range(start, self.capacity):
            heapq.heappush(self._free, slot)

    def add(self, image_code: int, indices: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Slots [n] of rows ``(image_code, indices[j]) -> rows[j]``, stored if new, and
        one more reference each."""
        slots = np.empty(len(indices), dtype=np.int64)
        for j, index in enumerate(np.asarray(indices, dtype=np.int64).tolist()):
            slot = self._slots.get((image_code, index), -1)
            if slot < 0:
                if not self._free:
                    self._grow()
                slot = heapq.heappop(self._free)
                page, off = divmod(slot, self.page_rows)
                self.pages[page][off] = rows[j]
                self.slot_image[slot], self.slot_index[slot] = image_code, index
                self._slots[(image_code, index)] = slot
            slots[j] = slot
        np.add.at(self.refcount, slots, 1)
        return slots

    def release(self, slots: np.ndarray) -> None:
        """Drop one reference from each slot; free the rows nobody refers to."""
        slots = np.asarray(slots, dtype=np.int64)
        np.subtract.at(self.refcount, slots, 1)
        if slots.size and self.refcount[slots].min() < 0:
            raise RuntimeError("feature store: released a row more often than it was added")
        for slot in np.unique(slots[self.refcount[slots] == 0]).tolist():
            del self._slots[(int(self.slot_image[slot]), int(self.slot_index[slot]))]
            self.slot_image[slot] = self.slot_index[slot] = -1
            heapq.heappush(self._free, slot)

    def gather(self, slots: np.ndarray, dtype=None) -> np.ndarray:
        """Rows [n, D] of ``slots``, in that order, as one contiguous copy in ``dtype``
        (default: the store's)."""
        slots = np.asarray(slots, dtype=np.int64)
        out = np.empty((len(slots), self.feat_dim), dtype=dtype or self.dtype)
        if not slots.size:
            return out
        page, off = np.divmod(slots, self.page_rows)
        order = np.argsort(page, kind="stable")
        bounds = np.flatnonzero(np.diff(page[order])) + 1
        for group in np.split(order, bounds):
            out[group] = self.pages[int(page[group[0]])][off[group]]
        return out

    def rebuild_index(self) -> None:
        """Recompute the key index and free list from ``slot_image`` / ``slot_index``."""
        used = self.slot_image >= 0
        self._slots = {(int(i), int(x)): int(s) for s, i, x in
                       zip(np.flatnonzero(used), self.slot_image[used], self.slot_index[used])}
        self._free = np.flatnonzero(~used).tolist()
        heapq.heapify(self._free)


@dataclasses.dataclass
class _ClassCache:
    """One class's training set: row slots in insertion order, labels, warm-start duals."""

    slots: np.ndarray  # int64 [n]
    labels: np.ndarray  # int8 [n], +1 positive / -1 negative
    alpha: np.ndarray  # float64 [n]
    new_since_retrain: int = 0
    hard_negatives_added: int = 0
    evicted: int = 0
    retrains: int = 0
    seconds: float = 0.0
    objective: float = float("nan")
    epochs: int = 0
    converged: bool = True

    STATS = ("new_since_retrain", "hard_negatives_added", "evicted", "retrains", "seconds",
             "objective", "epochs", "converged")

    @classmethod
    def empty(cls) -> "_ClassCache":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int8), np.zeros(0, np.float64))

    def append(self, slots: np.ndarray, label: int) -> None:
        self.slots = np.concatenate([self.slots, slots.astype(np.int64)])
        self.labels = np.concatenate([self.labels, np.full(len(slots), label, np.int8)])
        self.alpha = np.concatenate([self.alpha, np.zeros(len(slots), np.float64)])

    def stats(self) -> dict:
        return {name: getattr(self, name) for name in self.STATS}


class HardNegativeMiner:
    """One linear SVM per class trained with one pass of hard-negative mining.

    Usage (the training tool)::

        miner = HardNegativeMiner(K, D, cfg.svm, feature_scale=compute_feature_scale(sample))
        miner.add_positives(gt_features, gt_labels)                # [P, D], [P]
        for key in images:
            miner.process_image(key, window_features, candidates)  # [N, D], bool [K, N]
        W, b, report = miner.finish()                              # [K, D], [K], list of K dicts

    ``state_dict()`` / ``from_state_dict()`` checkpoint the miner between images.
    """

    def __init__(self, num_classes: int, feat_dim: int, cfg: SVMConfig, feature_scale: float = 1.0):
        if num_classes < 1 or feat_dim < 1:
            raise ValueError(f"need num_classes >= 1 and feat_dim >= 1, got {num_classes}, {feat_dim}")
        if not (np.isfinite(feature_scale) and feature_scale > 0):
            raise ValueError(f"feature_scale must be a positive number, got {feature_scale}")
        self.num_classes, self.feat_dim = int(num_classes), int(feat_dim)
        self.cfg = cfg
        self.feature_scale = float(feature_scale)
        self.store = FeatureStore(feat_dim, cfg.cache_dtype)
        self.classes = [_ClassCache.empty() for _ in range(num_classes)]
        # current models on the unscaled features; all zero at first, so every candidate
        # of the first image scores 0 > hard_threshold and is taken (as in R-CNN)
        self.weights = np.zeros((num_classes, feat_dim), dtype=np.float32)
        self.bias = np.zeros(num_classes, dtype=np.float64)
        self.image_keys: list[str | None] = [None]  # code 0: the positives
        self._image_codes: dict[str, int] = {}
        self.num_positives = 0
        self.images_processed = 0

    # ------------------------------------------------------------------ input
    def _check_features(self, features, what: str) -> np.ndarray:
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.feat_dim:
            raise ValueError(f"{what}: expected features [N, {self.feat_dim}], got shape {features.shape}")
        return features

    def _scaled_rows(self, features: np.ndarray, what: str) -> np.ndarray:
        """Rows as stored: rescaled (mean norm ~ target_norm, so float16 cannot overflow
        on large activations) and finite."""
        rows = (np.asarray(features, dtype=np.float32) * np.float32(self.feature_scale)).astype(self.store.dtype)
        if not np.isfinite(rows).all():
            raise ValueError(f"{what}: features are not finite (after scaling, in {self.store.dtype})")
        return rows

    def add_positives(self, features: np.ndarray, labels: np.ndarray) -> None:
        """Add ground-truth features [P, D] with class labels [P] in [0, K)."""
        features = self._check_features(features, "add_positives")
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(labels) != len(features):
            raise ValueError(f"add_positives: {len(features)} feature rows but {len(labels)} labels")
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"add_positives: labels must lie in [0, {self.num_classes})")
        ids = np.arange(self.num_positives, self.num_positives + len(labels))
        slots = self.store.add(0, ids, self._scaled_rows(features, "add_positives"))
        for k in np.unique(labels).tolist():
            self.classes[k].append(slots[labels == k], +1)
        self.num_positives += len(labels)

    def _image_code(self, image_key: str) -> int:
        code = self._image_codes.get(image_key)
        if code is None:
            code = self._image_codes[image_key] = len(self.image_keys)
            self.image_keys.append(image_key)
        return code

    def process_image(self, image_key: str, features: np.ndarray, negative_candidates: np.ndarray) -> None:
        """Mine one image.

        Args:
            image_key: unique per image; with the proposal index it identifies a window, so
                an image processed twice (after a resume) adds nothing twice.
            features: [N, D] features of the image's proposals (unscaled).
            negative_candidates: bool [K, N] from :func:`select_negative_candidates`.
        """
        features = self._check_features(features, f"process_image({image_key})")
        candidates = np.asarray(negative_candidates, dtype=bool)
        if candidates.shape != (self.num_classes, len(features)):
            raise ValueError(f"process_image({image_key}): negative_candidates must be "
                             f"[{self.num_classes}, {len(features)}], got {candidates.shape}")
        self.images_processed += 1
        columns = np.flatnonzero(candidates.any(axis=0))
        if columns.size == 0:
            return
        with np.errstate(invalid="ignore", over="ignore"):
            scores = np.asarray(features[columns], np.float32) @ self.weights.T + self.bias  # [n, K]
        if not np.isfinite(scores).all():
            raise ValueError(f"process_image({image_key}): features are not finite")
        hard = candidates[:, columns].T & (scores > self.cfg.hard_threshold)  # [n, K]
        code = self._image_code(image_key)
        hard_columns = np.flatnonzero(hard.any(axis=1))
        # one scaled copy per window, however many classes take it
        scaled = self._scaled_rows(features[columns[hard_columns]], f"process_image({image_key})")
        for k in np.flatnonzero(hard.any(axis=0)).tolist():
            cache = self.classes[k]
            picked = np.flatnonzero(hard[hard_columns, k])
            rows = columns[hard_columns[picked]]
            # dedup by (image_key, index): skip windows this class already holds
            held = [self.store.lookup(code, r) for r in rows.tolist()]
            member = np.zeros(self.store.capacity, dtype=bool)
            member[cache.slots] = True
            new = np.array([h < 0 or not member[h] for h in held], dtype=bool)
            if not new.any():
                continue
            slots = self.store.add(code, rows[new], scaled[picked[new]])
            cache.append(slots, -1)
            cache.new_since_retrain += int(new.sum())
            cache.hard_negatives_added += int(new.sum())
        for k, cache in enumerate(self.classes):
            if cache.new_since_retrain >= self.cfg.retrain_limit:
                self._retrain(k, evict=True)

    # ------------------------------------------------------------------ training
    def _retrain(self, k: int, evict: bool) -> None:
        cache = self.classes[k]
        cfg = self.cfg
        t0 = time.perf_counter()
        # the solver reads every active row each epoch: one float32 copy per retrain is
        # cheaper than converting float16 rows every epoch, when it fits
        copy_float32 = len(cache.slots) * self.feat_dim * 4 <= _FLOAT32_COPY_BYTES
        X = self.store.gather(cache.slots, np.float32 if copy_float32 else None)
        sol = train_linear_svm(
            X, cache.labels, cfg.C, cfg.pos_loss_weight, cfg.bias_multiplier, 1.0,
            tol=cfg.tol, max_epochs=cfg.max_epochs, alpha_init=cache.alpha,
            seed=k * 1_000_003 + cache.retrains)
        # stored rows are already scaled: fold the scale into the weights of raw features
        self.weights[k] = sol.weights * np.float32(self.feature_scale)
        self.bias[k] = sol.bias
        cache.alpha = sol.alpha
        cache.objective, cache.epochs, cache.converged = sol.objective, sol.epochs, sol.converged
        cache.retrains += 1
        cache.new_since_retrain = 0
        if evict:
            easy = (cache.labels < 0) & (sol.scores < cfg.evict_threshold)
            if easy.any():
                self.store.release(cache.slots[easy])
                cache.slots, cache.labels, cache.alpha = cache.slots[~easy], cache.labels[~easy], cache.alpha[~easy]
                cache.evicted += int(easy.sum())
        cache.seconds += time.perf_counter() - t0
        log.debug("class %d: retrain %d on %d rows, %d epochs, objective %.6g, %d evicted so far",
                  k, cache.retrains, len(X), sol.epochs, sol.objective, cache.evicted)

    def _check_score_invariant(self, k: int) -> None:
        """The detector's scores (raw features, ``x @ W[k] + b[k]``) must equal the SVM's
        own, computed from the cached duals on the stored, scaled rows in the
        bias-augmented space: ``sum_i alpha_i y_i [s x_i, B] . [s x, B]``. Checked on a
        sample of cached rows; costs one pass over the support vectors."""
        cache, s, B = self.classes[k], self.feature_scale, self.cfg.bias_multiplier
        support = np.flatnonzero(cache.alpha > 0)
        coef = cache.alpha[support] * cache.labels[support]
        w_dual = np.zeros(self.feat_dim, dtype=np.float64)
        for start in range(0, len(support), 4096):
            rows = self.store.gather(cache.slots[support[start : start + 4096]], np.float32)
            w_dual += rows.T @ coef[start : start + 4096].astype(np.float32)
        scaled = self.store.gather(cache.slots[:: max(1, len(cache.slots) // _INVARIANT_ROWS)], np.float64)
        svm_scores = scaled @ w_dual + B * B * float(coef.sum())
        detector_scores = (scaled / s) @ self.weights[k].astype(np.float64) + self.bias[k]
        tolerance = 1e-4 * (1.0 + np.abs(svm_scores))
        assert np.all(np.abs(svm_scores - detector_scores) <= tolerance), \
            f"class {k}: detector scores differ from the SVM's (max {np.abs(svm_scores - detector_scores).max():.3g})"

    def finish(self) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        """Retrain every class on its final cache.

        Returns:
            W float32 [K, D] and b float32 [K] with ``score = features @ W.T + b`` on
            unscaled features, and per class a dict: positives, negatives (cached at the
            end), hard_negatives_added, evicted, retrains, seconds, objective, epochs,
            converged.
        """
        report = []
        for k, cache in enumerate(self.classes):
            self._retrain(k, evict=False)
            self._check_score_invariant(k)
            positives = int((cache.labels > 0).sum())
            if positives == 0:
                log.warning("class %d has no positives: its SVM only learns to reject", k)
            report.append({
                "positives": positives,
                "negatives": int((cache.labels < 0).sum()),
                "hard_negatives_added": cache.hard_negatives_added,
                "evicted": cache.evicted,
                "retrains": cache.retrains,
                "seconds": round(cache.seconds, 4),
                "objective": float(cache.objective),
                "epochs": cache.epochs,
                "converged": bool(cache.converged),
            })
        log.info("SVMs trained: %d classes, %d cached rows (%.1f MiB store)", self.num_classes,
                 len(self.store), self.store.nbytes / 2**20)
        return self.weights.copy(), self.bias.astype(np.float32), report

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """``(arrays, meta)``: arrays for :func:`sppcore.fileio.atomic_save_npz` (no pickle;
        the store's pages are passed as they are, not copied) and a JSON-able dict."""
        arrays: dict[str, np.ndarray] = {
            "weights": self.weights,
            "bias": self.bias,
            "slot_image": self.store.slot_image,
            "slot_index": self.store.slot_index,
            "class_offsets": np.cumsum([0] + [len(c.slots) for c in self.classes]).astype(np.int64),
            "class_slots": np.concatenate([c.slots for c in self.classes]),
            "class_labels": np.concatenate([c.labels for c in self.classes]),
            "class_alpha": np.concatenate([c.alpha for c in self.classes]),
        }
        for p, page in enumerate(self.store.pages):
            arrays[f"page_{p:06d}"] = page
        meta = {
            "version": STATE_VERSION,
            "num_classes": self.num_classes,
            "feat_dim": self.feat_dim,
            "feature_scale": self.feature_scale,
            "cfg": dataclasses.asdict(self.cfg),
            "page_rows": self.store.page_rows,
            "num_pages": len(self.store.pages),
            "image_keys": self.image_keys,
            "num_positives": self.num_positives,
            "images_processed": self.images_processed,
            "classes": [c.stats() for c in self.classes],
        }
        return arrays, meta

    @classmethod
    def from_state_dict(cls, arrays: dict[str, np.ndarray], meta: dict) -> "HardNegativeMiner":
        """Rebuild a miner from :meth:`state_dict`'s output (e.g. read back from disk)."""
        if meta.get("version") != STATE_VERSION:
            raise MiningStateError(f"mining state version {meta.get('version')} != {STATE_VERSION}")
        try:
            cfg = SVMConfig(**meta["cfg"])
            miner = cls(meta["num_classes"], meta["feat_dim"], cfg, meta["feature_scale"])
            store = miner.store
            store.page_rows = int(meta["page_rows"])
            store.pages = [np.ascontiguousarray(arrays[f"page_{p:06d}"], dtype=store.dtype)
                           for p in range(int(meta["num_pages"]))]
            store.slot_image = np.asarray(arrays["slot_image"], np.int64).copy()
            store.slot_index = np.asarray(arrays["slot_index"], np.int64).copy()
            if len(store.slot_image) != store.capacity or any(p.shape != (store.page_rows, miner.feat_dim)
                                                              for p in store.pages):
                raise MiningStateError("mining state: feature pages do not match the slot table")
            miner.weights = np.asarray(arrays["weights"], np.float32).copy()
            miner.bias = np.asarray(arrays["bias"], np.float64).copy()
            offsets = np.asarray(arrays["class_offsets"], np.int64)
            store.refcount = np.zeros(store.capacity, np.int64)
            for k, stats in enumerate(meta["classes"]):
                part = slice(int(offsets[k]), int(offsets[k + 1]))
                cache = _ClassCache(np.asarray(arrays["class_slots"][part], np.int64).copy(),
                                    np.asarray(arrays["class_labels"][part], np.int8).copy(),
                                    np.asarray(arrays["class_alpha"][part], np.float64).copy(), **stats)
                np.add.at(store.refcount, cache.slots, 1)
                miner.classes[k] = cache
        except (KeyError, TypeError, IndexError) as e:
            raise MiningStateError(f"mining state is incomplete or malformed ({type(e).__name__}: {e})") from None
        if np.any((store.refcount > 0) != (store.slot_image >= 0)):
            raise MiningStateError("mining state: class caches and the feature store disagree")
        store.rebuild_index()
        miner.image_keys = list(meta["image_keys"])
        miner._image_codes = {key: code for code, key in enumerate(miner.image_keys) if key is not None}
        miner.num_positives = int(meta["num_positives"])
        miner.images_processed = int(meta["images_processed"])
        return miner
