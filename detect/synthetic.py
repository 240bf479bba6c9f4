"""The built-in dataset: procedurally drawn objects in VOC2007 layout (numpy + OpenCV).

A real detection problem rather than a separable toy: eight object classes defined by
their *shape* (colour and texture vary freely within every class), drawn at scales from
about 20 px to most of the image, with random aspect ratio, rotation, colour, texture and
outline, on cluttered textured backgrounds with distractor shapes that belong to no
class; 1-8 objects per image, partial occlusion between objects and truncation at the
image borders. As in VOC, the annotated box is the tight box of the object's *visible*
pixels, ``truncated`` marks an object cut by the border, and the hardest instances (less
than ``DIFFICULT_VISIBLE_FRACTION`` of the object visible, or a visible box side under
``DIFFICULT_MIN_SIDE`` px) are flagged ``difficult``.

Generation is deterministic for a seed: every image has its own
``numpy.random.default_rng((seed, split, index))``, so an image does not depend on how
many came before it. The dataset is written to a temporary directory and renamed into
place at the end, with a ``manifest.json``; a later call with the same settings finds the
manifest and does nothing.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
from tqdm import tqdm

from sppcore.boxes import internal_to_voc
from sppcore.errors import DatasetError
from sppcore.fileio import atomic_write_json

__all__ = [
    "SYNTHETIC_CLASSES",
    "GENERATOR_VERSION",
    "generate_synthetic_voc",
    "render_image",
    "dataset_statistics",
    "format_statistics",
]

log = logging.getLogger(__name__)

GENERATOR_VERSION = 3
SYNTHETIC_CLASSES = ("arrow", "bolt", "crescent", "cross", "heart", "ring", "star", "triangle")

IMAGE_SIDE_RANGE = (300, 500)  # VOC-like image sides, px
OBJECT_SIDE_RANGE = (28, 0.9)  # longer object side: 28 px .. 90% of the shorter image side
OBJECTS_PER_IMAGE = (1, 8)
DISTRACTORS_PER_IMAGE = (3, 10)
MAX_HIDDEN_BY_OCCLUSION = 0.4  # a placement hiding more of an existing object is refused
MIN_INSIDE_FRACTION = 0.6  # at least this much of an object lies inside the image
MAX_TILT = np.pi / 6  # objects are rotated by at most 30 degrees either way
DIFFICULT_VISIBLE_FRACTION = 0.5
DIFFICULT_MIN_SIDE = 18
MIN_CONTRAST = 70.0  # L1 distance (0..765) between object colour and local background mean
JPEG_QUALITY = 90


# ----------------------------------------------------------------------------- shapes
# Each returns a list of polygons (float [P, 2], unit coordinates in [-1, 1]) drawn as
# filled, optionally followed by "holes" (drawn with value 0).


def _star(rng):
    points = 5
    inner = rng.uniform(0.38, 0.5)
    t = np.arange(2 * points) * np.pi / points - np.pi / 2
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return [np.stack([r * np.cos(t), r * np.sin(t)], 1)], []


def _triangle(rng):
    apex = rng.uniform(-0.3, 0.3)
    return [np.array([[apex, -1.0], [1.0, 0.85], [-1.0, 0.85]])], []


def _cross(rng):
    a = rng.uniform(0.28, 0.4)
    p = np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1],
                  [-a, a], [-1, a], [-1, -a], [-a, -a]], dtype=float)
    return [p], []


def _arrow(rng):
    shaft = rng.uniform(0.18, 0.3)
    head_len = rng.uniform(0.7, 1.0)
    p = np.array([[-1, -shaft], [1 - head_len, -shaft], [1 - head_len, -0.8], [1, 0],
                  [1 - head_len, 0.8], [1 - head_len, shaft], [-1, shaft]], dtype=float)
    return [p], []


def _bolt(rng):
    w = rng.uniform(0.25, 0.35)
    p = np.array([[0.15, -1], [0.75, -1], [0.2, -0.15], [0.65, -0.15], [-0.5, 1],
                  [-0.05, 0.12], [-0.5, 0.12]], dtype=float)
    p[:, 0] *= 1.0 + (w - 0.3)
    return [p], []


def _heart(rng):
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    p = np.stack([x / 17.0, (y + 2.5) / 15.0], 1)
    return [p], []


def _circle(n=48, r=1.0, cx=0.0, cy=0.0):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)


def _ring(rng):
    return [_circle()], [_circle(r=rng.uniform(0.5, 0.66))]


def _crescent(rng):
    shift = rng.uniform(0.35, 0.55)
    return [_circle()], [_circle(r=rng.uniform(0.85, 1.0), cx=shift, cy=-0.15 * shift)]


SHAPES: dict[str, Callable] = {
    "arrow": _arrow,
    "bolt": _bolt,
    "crescent": _crescent,
    "cross": _cross,
    "heart": _heart,
    "ring": _ring,
    "star": _star,
    "triangle": _triangle,
}


def _distractor(rng):
    """Shapes of no class: irregular blobs, ellipses, rectangles."""
    kind = rng.integers(3)
    if kind == 0:
        n = int(rng.integers(5, 10))
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = rng.uniform(0.45, 1.0, n)
        return [np.stack([r * np.cos(t), r * np.sin(t)], 1)], []
    if kind == 1:
        return [_circle() * np.array([1.0, rng.uniform(0.3, 0.8)])], []
    a = rng.uniform(0.3, 1.0)
    return [np.array([[-1, -a], [1, -a], [1, a], [-1, a]], dtype=float)], []


# ----------------------------------------------------------------------------- rendering


def _transform(polys, size, aspect, angle, centre):
    """Unit polygons -> image coordinates: aspect stretch, rotation, scale, translation."""
    sx, sy = size / 2 * np.sqrt(aspect), size / 2 / np.sqrt(aspect)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return [(p * [sx, sy]) @ rot.T + centre for p in polys]


def _render_mask(fill, holes, shape_hw, margin=0):
    """Anti-aliased float mask [H, W] in 0..1 of filled polygons minus holes."""
    h, w = shape_hw
    mask = np.zeros((h + 2 * margin, w + 2 * margin), np.uint8)
    shift = 4  # sub-pixel precision of cv2.fillPoly
    for p in fill:
        pts = np.round((p + margin) * (1 << shift)).astype(np.int32)
        cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA, shift)
    for p in holes:
        pts = np.round((p + margin) * (1 << shift)).astype(np.int32)
        cv2.fillPoly(mask, [pts], 0, cv2.LINE_AA, shift)
    return mask.astype(np.float32) / 255.0


def _random_colour(rng):
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(60, 256), rng.integers(60, 256)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _texture(rng, h, w, base):
    """An [h, w, 3] float texture around colour ``base``: solid, stripes, checker,
    gradient or noise."""
    kind = rng.integers(5)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    other = _random_colour(rng)
    if kind == 0:
        tex = np.broadcast_to(base, (h, w, 3)).copy()
    elif kind == 1:
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(4, 14)
        t = (np.cos(angle) * xx + np.sin(angle) * yy) / period
        m = (np.floor(t) % 2)[..., None]
        tex = base * (1 - m) + other * m
    elif kind == 2:
        cell = rng.uniform(4, 12)
        m = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2)[..., None]
        tex = base * (1 - m) + other * m
    elif kind == 3:
        angle = rng.uniform(0, 2 * np.pi)
        t = np.cos(angle) * xx + np.sin(angle) * yy
        t = ((t - t.min()) / max(1e-6, np.ptp(t)))[..., None]
        tex = base * (1 - t) + other * t
    else:
        noise = rng.normal(0, 1, (max(2, h // 6), max(2, w // 6))).astype(np.float32)
        noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
        tex = base + 35.0 * noise
    return np.clip(tex, 0, 255)


def _background(rng, h, w):
    """Cluttered textured background: low-frequency colour blotches, optional stripes,
    fine grain."""
    grid = rng.uniform(0, 255, (int(rng.integers(2, 7)), int(rng.integers(2, 7)), 3)).astype(np.float32)
    bg = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    blot = rng.normal(0, 1, (h // 16 + 2, w // 16 + 2)).astype(np.float32)
    blot = cv2.resize(blot, (w, h), interpolation=cv2.INTER_CUBIC)
    bg += 30.0 * blot[..., None] * rng.uniform(0.3, 1.0, 3).astype(np.float32)
    if rng.random() < 0.4:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        angle = rng.uniform(0, np.pi)
        bg += rng.uniform(10, 30) * np.sin((np.cos(angle) * xx + np.sin(angle) * yy) / rng.uniform(3, 20))[..., None]
    bg += rng.normal(0, rng.uniform(3, 12), (h, w, 1)).astype(np.float32)
    return np.clip(bg, 0, 255)


def _composite(canvas, polys_fill, polys_hole, rng, outline):
    """Paint a textured shape onto ``canvas`` (float [H, W, 3], in place); returns the
    shape's full-resolution alpha mask [H, W] (0 outside the image)."""
    h, w = canvas.shape[:2]
    alpha = _render_mask(polys_fill, polys_hole, (h, w))
    ys, xs = np.nonzero(alpha > 0)
    if len(ys) == 0:
        return alpha
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    region = canvas[y0:y1, x0:x1]
    a = alpha[y0:y1, x0:x1, None]
    local_mean = region.reshape(-1, 3).mean(0)
    base = _random_colour(rng)
    for _ in range(10):  # keep most objects distinguishable from what lies under them
        if np.abs(base - local_mean).sum() >= MIN_CONTRAST:
            break
        base = _random_colour(rng)
    tex = _texture(rng, y1 - y0, x1 - x0, base)
    region[:] = region * (1 - a) + tex * a
    if outline:
        edge = cv2.morphologyEx((alpha[y0:y1, x0:x1] > 0.5).astype(np.uint8), cv2.MORPH_GRADIENT,
                                np.ones((3, 3), np.uint8)).astype(np.float32)[..., None]
        colour = np.float32([20, 20, 20]) if rng.random() < 0.5 else np.float32([235, 235, 235])
        region[:] = region * (1 - edge) + colour * edge
    return alpha


@dataclass
class _Object:
    label: int
    alpha: np.ndarray  # full mask inside the image, float [H, W]
    full_area: float  # area of the whole shape, inside the image or not
    visible: np.ndarray  # bool [H, W]


def render_image(rng: np.random.Generator, classes=SYNTHETIC_CLASSES):
    """One image and its objects.

    Returns ``(image uint8 [H, W, 3] RGB, objects)`` where objects is a list of dicts with
    ``label``, ``box`` (internal convention, integer-valued, tight around the visible
    pixels), ``truncated``, ``difficult`` and ``visible_fraction``.
    """
    w = int(rng.integers(IMAGE_SIDE_RANGE[0], IMAGE_SIDE_RANGE[1] + 1))
    h = int(rng.integers(IMAGE_SIDE_RANGE[0], IMAGE_SIDE_RANGE[1] + 1))
    canvas = _background(rng, h, w)
    # clutter first: distractors under the objects
    n_distract = int(rng.integers(DISTRACTORS_PER_IMAGE[0], DISTRACTORS_PER_IMAGE[1] + 1))
    for _ in range(n_distract):
        size = float(np.exp(rng.uniform(np.log(10), np.log(0.5 * min(h, w)))))
        fill, holes = _distractor(rng)
        centre = rng.uniform([0, 0], [w, h])
        angle, aspect = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 2.0)
        _composite(canvas, _transform(fill, size, aspect, angle, centre),
                   _transform(holes, size, aspect, angle, centre), rng, outline=rng.random() < 0.3)
    # squiggly lines
    for _ in range(int(rng.integers(0, 4))):
        pts = np.cumsum(rng.normal(0, 25, (int(rng.integers(3, 8)), 2)), 0) + rng.uniform([0, 0], [w, h])
        colour = tuple(float(c) for c in _random_colour(rng))
        cv2.polylines(canvas, [np.round(pts).astype(np.int32)], False, colour, int(rng.integers(1, 5)), cv2.LINE_AA)

    n_objects = int(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1))
    objects: list[_Object] = []
    max_side = OBJECT_SIDE_RANGE[1] * min(h, w)
    for _ in range(n_objects):
        for _attempt in range(20):
            label = int(rng.integers(len(classes)))
            # log-uniform size, so small objects are as common as large ones
            size = float(np.exp(rng.uniform(np.log(OBJECT_SIDE_RANGE[0]), np.log(max_side))))
            aspect = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
            # upright within MAX_TILT, as objects mostly are in photographs
            angle = float(rng.uniform(-MAX_TILT, MAX_TILT))
            margin = 0.35 * size if rng.random() < 0.25 else -0.3 * size  # sometimes at the border
            centre = rng.uniform([-margin, -margin], [w + margin, h + margin])
            fill, holes = SHAPES[classes[label]](rng)
            fill_t = _transform(fill, size, aspect, angle, centre)
            holes_t = _transform(holes, size, aspect, angle, centre)
            pad = int(size) + 2
            full = _render_mask([p + pad for p in fill_t], [p + pad for p in holes_t], (h + 2 * pad, w + 2 * pad))
            full_area = float(full.sum())
            inside = full[pad:pad + h, pad:pad + w]
            if full_area <= 0 or inside.sum() < MIN_INSIDE_FRACTION * full_area:
                continue
            new_mask = inside > 0.5
            ok = True
            for o in objects:  # refuse to bury an existing object
                still = (o.visible & ~new_mask).sum()
                if still < (1 - MAX_HIDDEN_BY_OCCLUSION) * o.visible.sum():
                    ok = False
                    break
            if not ok:
                continue
            alpha = _composite(canvas, fill_t, holes_t, rng, outline=rng.random() < 0.4)
            for o in objects:
                o.visible &= ~(alpha > 0.5)
            objects.append(_Object(label, alpha, full_area, alpha > 0.5))
            break
    # a few small distractors on top, partly occluding objects
    for _ in range(int(rng.integers(0, 3))):
        size = float(np.exp(rng.uniform(np.log(8), np.log(40))))
        fill, holes = _distractor(rng)
        centre = rng.uniform([0, 0], [w, h])
        angle, aspect = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 2.0)
        fill_t = _transform(fill, size, aspect, angle, centre)
        trial = _render_mask(fill_t, [], (h, w)) > 0.5
        if any((o.visible & ~trial).sum() < (1 - MAX_HIDDEN_BY_OCCLUSION) * o.visible.sum() for o in objects):
            continue
        alpha = _composite(canvas, fill_t, [], rng, outline=False)
        for o in objects:
            o.visible &= ~(alpha > 0.5)

    out = []
    for o in objects:
        ys, xs = np.nonzero(o.visible)
        if len(ys) == 0:
            continue
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
        visible_fraction = float(o.visible.sum() / o.full_area)
        inside_fraction = float(o.alpha.sum() / o.full_area)
        side = min(box[2] - box[0], box[3] - box[1])
        out.append({
            "label": o.label,
            "box": box,
            "truncated": inside_fraction < 0.98,
            "difficult": visible_fraction < DIFFICULT_VISIBLE_FRACTION or side < DIFFICULT_MIN_SIDE,
            "visible_fraction": visible_fraction,
        })
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    return image, out


# ----------------------------------------------------------------------------- writing


def _annotation_xml(image_id: str, width: int, height: int, objects, classes) -> str:
    lines = [
        "<annotation>",
        "  <folder>VOC2007</folder>",
        f"  <filename>{image_id}.jpg</filename>",
        "  <source><database>sppdet generated shapes</database></source>",
        f"  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
        "  <segmented>0</segmented>",
    ]
    for o in objects:
        # internal integer-valued box -> VOC 1-based inclusive pixels
        xmin, ymin, xmax, ymax = (int(round(v)) for v in internal_to_voc(o["box"][None])[0])
        lines += [
            "  <object>",
            f"    <name>{classes[o['label']]}</name>",
            "    <pose>Unspecified</pose>",
            f"    <truncated>{int(o['truncated'])}</truncated>",
            f"    <difficult>{int(o['difficult'])}</difficult>",
            f"    <bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>",
            "  </object>",
        ]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def _manifest(seed: int, num_trainval: int, num_test: int) -> dict:
    return {
        "generator": "sppdet.synthetic",
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "num_trainval": int(num_trainval),
        "num_test": int(num_test),
        "classes": list(SYNTHETIC_CLASSES),
    }


# fewer images than this are drawn in one process when the number of workers is left to the cores
PARALLEL_MIN_IMAGES = 64


def _write_image(item) -> dict[str, int]:
    """Draw one image from its seed and write its JPEG and annotation into the dataset
    directory being built; returns its classes' VOC presence flags (1: a non-difficult
    instance, 0: difficult ones only)."""
    tmp, image_id, rng_seed = item
    classes = SYNTHETIC_CLASSES
    image, objects = render_image(np.random.default_rng(rng_seed), classes)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise DatasetError(f"{image_id}: JPEG encoding failed")
    buf.tofile(os.path.join(tmp, "JPEGImages", image_id + ".jpg"))
    xml = _annotation_xml(image_id, image.shape[1], image.shape[0], objects, classes)
    with open(os.path.join(tmp, "Annotations", image_id + ".xml"), "w", encoding="utf-8") as f:
        f.write(xml)
    flags: dict[str, int] = {}
    for o in objects:
        name = classes[o["label"]]
        flags[name] = max(flags.get(name, -1), 0 if o["difficult"] else 1)
    return flags


def generate_synthetic_voc(
    out_dir: str,
    seed: int = 0,
    num_trainval: int = 250,
    num_test: int = 250,
    progress: bool = True,
    workers: int = 0,
) -> str:
    """Write ``out_dir/VOC2007`` (VOC2007 layout) and return its path. Images are drawn by
    ``workers`` processes (0: the cores available; 1: this process), each from its own
    seed, so the files are the same whatever the number of workers.

    Does nothing when ``out_dir/VOC2007/manifest.json`` records the same settings. An
    existing ``VOC2007`` with another generator manifest is replaced; one without a
    manifest (someone's real data) is never touched: that is an error.
    """
    if num_trainval < 0 or num_test < 0 or num_trainval + num_test == 0:
        raise DatasetError(f"{out_dir}: need a positive number of images (trainval {num_trainval}, test {num_test})")
    root = os.path.join(out_dir, "VOC2007")
    manifest = _manifest(seed, num_trainval, num_test)
    manifest_path = os.path.join(root, "manifest.json")
    if os.path.isdir(root):
        try:
            with open(manifest_path, encoding="utf-8") as f:
                existing = json.load(f)
        except (OSError, ValueError):
            raise DatasetError(f"{root}: exists and was not written by the generator; choose another --out") from None
        if existing == manifest:
            log.info("%s: already generated (seed %d, %d trainval, %d test)", root, seed, num_trainval, num_test)
            return root
        if existing.get("generator") != manifest["generator"]:
            raise DatasetError(f"{root}: exists and was not written by the generator; choose another --out")
        log.info("%s: generated with other settings; regenerating", root)
    os.makedirs(out_dir, exist_ok=True)
    tmp = os.path.join(out_dir, f".VOC2007.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(tmp, sub))
    classes = SYNTHETIC_CLASSES
    splits = [("trainval", 0, num_trainval), ("test", 1, num_test)]
    ids: dict[str, list[str]] = {"trainval": [], "test": []}
    presence: dict[str, dict[str, int]] = {}
    total = num_trainval + num_test
    bar = tqdm(total=total, desc="generating images", disable=not progress)
    jobs = []  # (split, image id, rng seed), in id order
    for split, code, n in splits:
        for i in range(n):
            jobs.append((split, f"{len(jobs) + 1:06d}", (seed, code, i)))
    if workers <= 0:  # the cores available; a small set is not worth starting processes for
        workers = len(os.sched_getaffinity(0)) if len(jobs) >= PARALLEL_MIN_IMAGES else 1
    workers = min(len(jobs), workers)
    try:
        items = [(tmp, image_id, rng_seed) for _, image_id, rng_seed in jobs]
        if workers > 1:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(workers) as pool:
                done = []
                for flags in pool.imap(_write_image, items, chunksize=8):
                    done.append(flags)
                    bar.update(1)
        else:
            done = []
            for item in items:
                done.append(_write_image(item))
                bar.update(1)
        for (split, image_id, _), flags in zip(jobs, done):
            ids[split].append(image_id)
            presence[image_id] = flags
        bar.close()
        main = os.path.join(tmp, "ImageSets", "Main")
        sets = {
            "trainval": ids["trainval"],
            "train": ids["trainval"][0::2],
            "val": ids["trainval"][1::2],
            "test": ids["test"],
        }
        for name, members in sets.items():
            with open(os.path.join(main, f"{name}.txt"), "w", encoding="utf-8") as f:
                f.write("".join(f"{i}\n" for i in members))
            for cls in classes:
                with open(os.path.join(main, f"{cls}_{name}.txt"), "w", encoding="utf-8") as f:
                    f.write("".join(f"{i} {presence[i].get(cls, -1):2d}\n" for i in members))
        atomic_write_json(os.path.join(tmp, "manifest.json"), manifest)
        if os.path.isdir(root):
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


# ----------------------------------------------------------------------------- statistics


def dataset_statistics(root: str, image_set: str) -> dict:
    """Images, objects per image, per-class counts, box sides, difficult and truncated
    fractions of one image set of a VOC-layout dataset."""
    from detect.voc import VOCDataset

    ds = VOCDataset(root, image_set)
    per_image, sides, n_diff, n_trunc = [], [], 0, 0
    per_class = {c: 0 for c in ds.classes}
    for image_id in ds.image_ids:
        a = ds.annotation(image_id)
        per_image.append(len(a.labels))
        sides.extend(np.maximum(a.boxes[:, 2] - a.boxes[:, 0], a.boxes[:, 3] - a.boxes[:, 1]).tolist())
        n_diff += int(a.difficult.sum())
        n_trunc += int(a.truncated.sum())
        for label in a.labels:
            per_class[ds.classes[label]] += 1
    per_image_arr = np.asarray(per_image)
    sides_arr = np.asarray(sides) if sides else np.zeros(1)
    n_obj = int(per_image_arr.sum())
    return {
        "image_set": image_set,
        "images": len(ds),
        "objects": n_obj,
        "objects_per_image": {
            "mean": float(per_image_arr.mean()) if len(per_image_arr) else 0.0,
            "min": int(per_image_arr.min()) if len(per_image_arr) else 0,
            "max": int(per_image_arr.max()) if len(per_image_arr) else 0,
            "histogram": {int(k): int((per_image_arr == k).sum()) for k in np.unique(per_image_arr)},
        },
        "per_class": per_class,
        "box_longer_side_px": {
            "min": float(sides_arr.min()),
            "p10": float(np.percentile(sides_arr, 10)),
            "median": float(np.median(sides_arr)),
            "p90": float(np.percentile(sides_arr, 90)),
            "max": float(sides_arr.max()),
        },
        "difficult_fraction": n_diff / max(1, n_obj),
        "truncated_fraction": n_trunc / max(1, n_obj),
    }


def format_statistics(stats: dict) -> str:
    """A short text report of :func:`dataset_statistics`."""
    opi, side = stats["objects_per_image"], stats["box_longer_side_px"]
    hist = " ".join(f"{k}:{v}" for k, v in opi["histogram"].items())
    lines = [
        f"{stats['image_set']}: {stats['images']} images, {stats['objects']} objects",
        f"  objects/image  mean {opi['mean']:.2f}  min {opi['min']}  max {opi['max']}  histogram {hist}",
        f"  longer box side (px)  min {side['min']:.0f}  p10 {side['p10']:.0f}  median {side['median']:.0f}"
        f"  p90 {side['p90']:.0f}  max {side['max']:.0f}",
        f"  difficult {100 * stats['difficult_fraction']:.1f}%   truncated {100 * stats['truncated_fraction']:.1f}%",
        "  per class  " + "  ".join(f"{k} {v}" for k, v in stats["per_class"].items()),
    ]
    return "\n".join(lines)
