"""A learnable synthetic keypoint dataset, in the file layout a config's dataset type reads.

Each image holds one figure on a textured background: a disc per keypoint
(one colour per left/right pair, so horizontal flips stay consistent), limbs
along the dataset's skeleton, random pose, scale, rotation and aspect. A
network can only score well by finding each disc and telling left from right
by the figure's geometry, as on real people; an adapter that is right in
shape but wrong in geometry (a shifted resize, a transposed grid) scores low.

The annotation is written the way each mmpose dataset type parses it (COCO
boxes, face ``center``/``scale``, COCO-WholeBody parts, MPII's list and head
boxes), so the stock pipeline and the stock metric run unchanged.
"""

from __future__ import annotations

import enum
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adaptkit.errors import ConfigError

__all__ = ["AnnotationStyle", "KeypointLayout", "SplitFiles", "layout_for_dataset", "write_split"]


class AnnotationStyle(enum.Enum):
    """How a dataset type reads its annotation file."""

    COCO = "coco"  # bbox + keypoints (+ center/scale, box_size, head_size for face and hand types)
    WHOLEBODY = "wholebody"  # body keypoints + foot/face/hand parts, 133 in all
    WHOLEBODY_FACE = "wholebody_face"  # face_kpts / face_box / face_valid
    WHOLEBODY_HAND = "wholebody_hand"  # lefthand_kpts / lefthand_box / lefthand_valid
    MPII = "mpii"  # a JSON list with center/scale/joints, head boxes in a .mat file


_STYLES = {
    "CocoWholeBodyDataset": AnnotationStyle.WHOLEBODY,
    "CocoWholeBodyFaceDataset": AnnotationStyle.WHOLEBODY_FACE,
    "CocoWholeBodyHandDataset": AnnotationStyle.WHOLEBODY_HAND,
    "MpiiDataset": AnnotationStyle.MPII,
}

#: COCO-WholeBody parts in the order the 133 keypoints are stored
_WHOLEBODY_PARTS = (
    ("keypoints", 17),
    ("foot_kpts", 6),
    ("face_kpts", 68),
    ("lefthand_kpts", 21),
    ("righthand_kpts", 21),
)


@dataclass(frozen=True)
class KeypointLayout:
    """What a dataset type expects: its keypoints, their flip pairs and skeleton, its file style."""

    dataset_type: str
    style: AnnotationStyle
    names: tuple[str, ...]
    flip_indices: tuple[int, ...]
    skeleton: tuple[tuple[int, int], ...]

    @property
    def num_keypoints(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class SplitFiles:
    """Where one written split lies, relative to its data root."""

    ann_file: str
    img_prefix: str
    headbox_file: str | None
    num_images: int


def layout_for_dataset(dataset_cfg: Any) -> KeypointLayout:
    """The layout of a config's dataset: type, metainfo (keypoints, flips, skeleton) and file style.

    Raises ConfigError when the type is not a registered mmpose dataset.
    """
    from mmpose.datasets.datasets.utils import parse_pose_metainfo
    from mmpose.registry import DATASETS

    type_name = dataset_cfg.get("type") if hasattr(dataset_cfg, "get") else None
    cls = DATASETS.get(type_name) if isinstance(type_name, str) else None
    if not isinstance(type_name, str) or cls is None or not hasattr(cls, "METAINFO"):
        raise ConfigError(f"dataset type {type_name!r} is not an mmpose keypoint dataset; smoke needs one")
    raw = dataset_cfg.get("metainfo") or cls.METAINFO
    if not raw:
        raise ConfigError(f"dataset type {type_name!r} declares no keypoints (no METAINFO); set metainfo in the config")
    with warnings.catch_warnings():  # mmpose warns that it found the metainfo file inside its package
        warnings.simplefilter("ignore")
        meta = parse_pose_metainfo(dict(raw))
    names = tuple(meta["keypoint_id2name"][i] for i in range(int(meta["num_keypoints"])))
    links = tuple((int(a), int(b)) for a, b in meta.get("skeleton_links", []))
    return KeypointLayout(
        dataset_type=type_name,
        style=_STYLES.get(type_name, AnnotationStyle.COCO),
        names=names,
        flip_indices=tuple(int(i) for i in meta["flip_indices"]),
        skeleton=links,
    )


# ------------------------------------------------------------------------------------ the figure

#: a frontal person in body units (x to the image's right is the person's left, y down)
_BODY = {
    "nose": (0.0, -0.74), "left_eye": (0.06, -0.81), "right_eye": (-0.06, -0.81),
    "left_ear": (0.13, -0.77), "right_ear": (-0.13, -0.77), "left_shoulder": (0.26, -0.5),
    "right_shoulder": (-0.26, -0.5), "left_elbow": (0.36, -0.14), "right_elbow": (-0.36, -0.14),
    "left_wrist": (0.42, 0.18), "right_wrist": (-0.42, 0.18), "left_hip": (0.16, 0.12),
    "right_hip": (-0.16, 0.12), "left_knee": (0.18, 0.52), "right_knee": (-0.18, 0.52),
    "left_ankle": (0.2, 0.9), "right_ankle": (-0.2, 0.9), "head_top": (0.0, -0.97),
    "top_head": (0.0, -0.97), "neck": (0.0, -0.58), "upper_neck": (0.0, -0.62), "thorax": (0.0, -0.48),
    "pelvis": (0.0, 0.12),
}  # fmt: skip
#: joints that swing about a parent: (joint, pivot, angle range in degrees)
_SWINGS = (("elbow", "shoulder", 50.0), ("wrist", "elbow", 60.0), ("knee", "hip", 22.0), ("ankle", "knee", 22.0))


def _template(layout: KeypointLayout) -> np.ndarray:
    """Body-unit positions of every keypoint; symmetric, with pairs on either side of x = 0.

    A person layout (all names known) gets a human figure; any other layout a
    fixed, well-spread random one (seeded by its names) that keeps each flip
    pair mirrored, so the stock RandomFlip stays consistent with the figure.
    """
    if all(n in _BODY for n in layout.names):
        return np.array([_BODY[n] for n in layout.names], dtype=np.float64)
    rng = np.random.default_rng(sum(ord(c) for n in layout.names for c in n))
    points = np.zeros((layout.num_keypoints, 2))
    placed: list[np.ndarray] = []
    spacing = 0.75 * math.sqrt(3.2 / max(layout.num_keypoints, 1))
    for i, j in enumerate(layout.flip_indices):
        if j < i:
            points[i] = points[j] * (-1.0, 1.0)
            continue
        for attempt in range(400):
            x = rng.uniform(-0.9, 0.9) if j == i else rng.uniform(0.1, 0.9)  # a lone point has its own colour
            candidate = np.array([x, rng.uniform(-0.9, 0.9)])
            near = min((np.linalg.norm(candidate - p) for p in placed), default=math.inf)
            if near >= spacing * (1.0 - attempt / 400):
                break
        points[i] = candidate
        placed.extend([candidate] if j == i else [candidate, candidate * (-1.0, 1.0)])
    return points


def _pose(layout: KeypointLayout, template: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random pose in body units: limbs swung about their joints, plus a small jitter."""
    points = template.copy()
    index = {n: k for k, n in enumerate(layout.names)}
    for side in ("left", "right"):
        for joint, pivot, spread in _SWINGS:
            j, p = index.get(f"{side}_{joint}"), index.get(f"{side}_{pivot}")
            if j is None or p is None:
                continue
            angle = math.radians(rng.uniform(-spread, spread))
            moved = [j] + [
                index[f"{side}_{c}"] for c, parent, _ in _SWINGS if parent == joint and f"{side}_{c}" in index
            ]
            c, s = math.cos(angle), math.sin(angle)
            for k in moved:
                d = points[k] - points[p]
                points[k] = points[p] + (c * d[0] - s * d[1], s * d[0] + c * d[1])
    return points + rng.normal(0.0, 0.02, size=points.shape)


def _palette(layout: KeypointLayout) -> list[tuple[int, int, int]]:
    """One saturated BGR colour per flip pair (a pair shares it: flips must not change the answer)."""
    import cv2

    groups: dict[int, int] = {}
    for i, j in enumerate(layout.flip_indices):
        groups[i] = groups.get(j, len(set(groups.values())))
    count = max(len(set(groups.values())), 1)
    colours = []
    for i in range(layout.num_keypoints):
        g = groups[i]
        hsv = np.array([[[int(180 * g / count) % 180, 255 if g % 2 == 0 else 190, 255]]], dtype=np.uint8)
        b, gr, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
        colours.append((int(b), int(gr), int(r)))
    return colours


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Low-contrast texture: a smooth colour field, fine noise, and a few muted bars."""
    import cv2

    coarse = rng.integers(30, 170, size=(max(height // 32, 2), max(width // 32, 2), 3)).astype(np.float32)
    coarse = 0.3 * coarse + 0.7 * coarse.mean(axis=2, keepdims=True)  # muted: colour belongs to the keypoints
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    image += rng.integers(-12, 13, size=image.shape, dtype=np.int16)
    for _ in range(int(rng.integers(2, 6))):
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p2 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        grey = int(rng.integers(40, 140))
        cv2.line(image, p1, p2, (grey, grey, grey), int(rng.integers(1, 4)))
    return np.clip(image, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class _Figure:
    keypoints: np.ndarray  # (K, 2) pixels
    bbox: tuple[float, float, float, float]  # x, y, w, h


def _render(
    layout: KeypointLayout, template: np.ndarray, colours: Sequence[tuple[int, int, int]], rng: np.random.Generator,
    width: int, height: int,
) -> tuple[np.ndarray, _Figure]:  # fmt: skip
    import cv2

    image = _background(rng, width, height)
    size = rng.uniform(0.28, 0.45) * min(width, height)  # body units -> pixels
    aspect = rng.uniform(0.8, 1.25)
    angle = math.radians(rng.uniform(-25.0, 25.0))
    c, s = math.cos(angle), math.sin(angle)
    body = _pose(layout, template, rng) * (size * aspect, size)
    points = body @ np.array([[c, s], [-s, c]])
    lo, hi = points.min(axis=0), points.max(axis=0)
    margin = 0.08 * size
    centre_lo = -lo + margin
    centre_hi = np.array([width, height]) - hi - margin
    centre = rng.uniform(centre_lo, np.maximum(centre_hi, centre_lo + 1.0))
    points = points + centre
    limb = max(int(round(size * 0.035)), 1)
    for a, b in layout.skeleton:
        p, q = points[a], points[b]
        cv2.line(image, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), (215, 215, 215), limb, cv2.LINE_AA)
    radius = max(size * 0.045 * (2.4 / math.sqrt(max(layout.num_keypoints, 6))) ** 0.5, 2.0)
    order = np.argsort(-np.arange(layout.num_keypoints))
    for k in order:
        x, y = points[k]
        centre_px = (int(round(x * 8)), int(round(y * 8)))  # sub-pixel centres: 3 fractional bits
        cv2.circle(image, centre_px, int(round(radius * 8)), (20, 20, 20), -1, cv2.LINE_AA, 3)
        cv2.circle(image, centre_px, int(round(radius * 0.75 * 8)), colours[k], -1, cv2.LINE_AA, 3)
    x0, y0 = (points.min(axis=0) - margin).clip(0.0)
    x1, y1 = np.minimum(points.max(axis=0) + margin, (width - 1, height - 1))
    return image, _Figure(points, (float(x0), float(y0), float(x1 - x0), float(y1 - y0)))


# -------------------------------------------------------------------------------- annotation files


def _triplets(points: np.ndarray) -> list[float]:
    return [round(float(v), 2) for x, y in points for v in (x, y, 2.0)]


def _coco_annotation(style: AnnotationStyle, index: int, fig: _Figure) -> dict[str, Any]:
    x, y, w, h = fig.bbox
    box = [round(v, 2) for v in fig.bbox]
    count = len(fig.keypoints)
    ann: dict[str, Any] = dict(
        id=index + 1, image_id=index + 1, category_id=1, bbox=box, area=round(w * h, 2), iscrowd=0,
        segmentation=[[x, y, x + w, y, x + w, y + h, x, y + h]], num_keypoints=count,
        center=[round(x + w / 2, 2), round(y + h / 2, 2)], scale=round(max(w, h) / 200.0, 4),
        box_size=round(max(w, h), 2), head_size=round(0.3 * max(w, h), 2),
    )  # fmt: skip
    if style is AnnotationStyle.COCO:
        ann["keypoints"] = _triplets(fig.keypoints)
        return ann
    empty = {name: [0.0] * (3 * n) for name, n in _WHOLEBODY_PARTS}
    ann.update(empty)
    for part in ("face", "lefthand", "righthand"):
        ann[f"{part}_box"] = [0.0, 0.0, 0.0, 0.0]
        ann[f"{part}_valid"] = False
    ann["foot_valid"] = False
    if style is AnnotationStyle.WHOLEBODY:
        start = 0
        for name, n in _WHOLEBODY_PARTS:
            ann[name] = _triplets(fig.keypoints[start : start + n])
            start += n
        for part in ("face", "lefthand", "righthand", "foot"):
            ann[f"{part}_valid"] = True
        for part, name in (("face", "face_kpts"), ("lefthand", "lefthand_kpts"), ("righthand", "righthand_kpts")):
            pts = np.array(ann[name]).reshape(-1, 3)[:, :2]
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            ann[f"{part}_box"] = [round(float(v), 2) for v in (*lo, *(hi - lo))]
        ann["num_keypoints"] = 17
    elif style is AnnotationStyle.WHOLEBODY_FACE:
        ann.update(face_kpts=_triplets(fig.keypoints), face_box=box, face_valid=True, num_keypoints=0)
    else:
        ann.update(lefthand_kpts=_triplets(fig.keypoints), lefthand_box=box, lefthand_valid=True, num_keypoints=0)
    return ann


def write_split(
    root: str | Path,
    split: str,
    layout: KeypointLayout,
    *,
    num_images: int,
    seed: int,
    image_size: tuple[int, int] = (256, 256),
) -> SplitFiles:
    """Write ``root/<split>/*.jpg`` and ``root/<split>.json`` (plus MPII's head boxes) for one split.

    ``image_size`` is (width, height). Different seeds give disjoint
    figures, so a split written with another seed is a held-out set.
    """
    import cv2

    if num_images < 1:
        raise ConfigError(f"a synthetic split needs at least one image, got {num_images}")
    root = Path(root)
    (root / split).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, layout.num_keypoints])
    template = _template(layout)
    colours = _palette(layout)
    width, height = image_size
    figures: list[_Figure] = []
    images = []
    for i in range(num_images):
        image, fig = _render(layout, template, colours, rng, width, height)
        name = f"{i + 1:06d}.jpg"
        cv2.imwrite(str(root / split / name), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        figures.append(fig)
        images.append(dict(id=i + 1, file_name=name, width=width, height=height, crowdIndex=0.0))
    headbox_file = None
    if layout.style is AnnotationStyle.MPII:
        document: Any = _mpii_annotations(figures)
        headbox_file = f"{split}_headboxes.mat"
        _write_headboxes(root / headbox_file, figures)
    else:
        categories = [
            dict(id=1, name="person", supercategory="person", keypoints=list(layout.names),
                 skeleton=[[a + 1, b + 1] for a, b in layout.skeleton])
        ]  # fmt: skip
        annotations = [_coco_annotation(layout.style, i, fig) for i, fig in enumerate(figures)]
        document = dict(images=images, annotations=annotations, categories=categories)
    ann_file = f"{split}.json"
    (root / ann_file).write_text(json.dumps(document))
    return SplitFiles(ann_file=ann_file, img_prefix=f"{split}/", headbox_file=headbox_file, num_images=num_images)


def _mpii_annotations(figures: Sequence[_Figure]) -> list[dict[str, Any]]:
    """MPII's list: 1-based centres, scale in units of 200 px, joints and their visibility."""
    rows = []
    for i, fig in enumerate(figures):
        x, y, w, h = fig.bbox
        rows.append(
            dict(
                image=f"{i + 1:06d}.jpg",
                center=[x + w / 2 + 1.0, y + h / 2 + 1.0 - 15.0 * max(w, h) / 200.0],  # mmpose adds 15*scale back
                scale=max(w, h) / 200.0,
                joints=[[round(float(a), 2), round(float(b), 2)] for a, b in fig.keypoints],
                joints_vis=[1] * len(fig.keypoints),
            )
        )
    return rows


def _write_headboxes(path: Path, figures: Sequence[_Figure]) -> None:
    """MPII's PCKh normaliser: a head box per figure, stored as ``headboxes_src`` [2, 2, N]."""
    from scipy.io import savemat

    boxes = np.zeros((2, 2, len(figures)))
    for i, fig in enumerate(figures):
        x, y, w, h = fig.bbox
        side = 0.25 * max(w, h)
        boxes[:, :, i] = [[x + w / 2 - side / 2, y], [x + w / 2 + side / 2, y + side]]
    savemat(str(path), {"headboxes_src": boxes})
