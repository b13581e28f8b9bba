"""Lip-shape series from MediaPipe's face-mesh landmarks: what the landmarks engine reads of the lips.

Per frame: 5 lip shapes (distances and the inner lip's area, each over the inter-ocular distance) and the
CONTOUR_COMPONENTS principal components of the 40 lip-contour landmarks after the head's pose is removed (a similarity
transform of RIGID_POINTS onto a template; the model in CONTOUR_PATH, fitted by ``python -m
benchmarks.calibrate_landmarks --projection``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from syncnet.faces import FaceTrack

# MediaPipe face mesh indices
INNER_LIP = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95]
OUTER_LIP = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146]
UPPER_INNER, LOWER_INNER = 13, 14
UPPER_OUTER, LOWER_OUTER = 0, 17
MOUTH_LEFT, MOUTH_RIGHT = 61, 291
EYE_OUTER_RIGHT, EYE_OUTER_LEFT = 33, 263
NOSE_TIP, CHIN = 1, 152
LIP_SHAPES = ("inner_gap", "mouth_width", "outer_height", "inner_area", "jaw_drop")
CONTOUR_COMPONENTS = 8  # principal components of the pose-normalised lip contour
LIP_FEATURES = LIP_SHAPES + tuple(f"contour_{i + 1}" for i in range(CONTOUR_COMPONENTS))  # columns of lip_shapes
LIP_POINTS = OUTER_LIP + INNER_LIP
# points that move little with speech (eye corners, nose bridge and tip, forehead, cheeks): the head pose
RIGID_POINTS = [33, 133, 263, 362, 168, 6, 197, 1, 10, 234, 454, 127, 356]
CONTOUR_PATH = Path(__file__).parent / "assets" / "lip_contour.json"


def lip_shapes(track: FaceTrack) -> np.ndarray:
    """float32 (n, 13) lip-shape series, columns LIP_FEATURES (see `lip_shapes_of`)."""
    return lip_shapes_of(track.landmarks)


def lip_shapes_of(landmarks: np.ndarray, contour: LipContour | None = None) -> np.ndarray:
    """float32 (n, 13) from (n, 478, 3) landmarks: 5 lip shapes, each over the inter-ocular distance (face size),
    then the CONTOUR_COMPONENTS lip-contour components (`lip_contour`; `contour`: the stored model by default)."""
    return np.concatenate([_shapes(landmarks), lip_contour(landmarks, contour)], axis=1).astype(np.float32)


def _shapes(landmarks: np.ndarray) -> np.ndarray:
    p = landmarks[..., :2].astype(np.float64)

    def dist(i: int, j: int) -> np.ndarray:
        return np.linalg.norm(p[:, i] - p[:, j], axis=-1)

    eyes = np.maximum(dist(EYE_OUTER_RIGHT, EYE_OUTER_LEFT), 1e-6)
    inner = p[:, INNER_LIP]
    x, y = inner[..., 0], inner[..., 1]
    area = 0.5 * np.abs((x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1))
    features = [
        dist(UPPER_INNER, LOWER_INNER) / eyes,
        dist(MOUTH_LEFT, MOUTH_RIGHT) / eyes,
        dist(UPPER_OUTER, LOWER_OUTER) / eyes,
        area / eyes**2,
        dist(NOSE_TIP, CHIN) / eyes,
    ]
    return np.stack(features, axis=1).astype(np.float32)


@dataclass(frozen=True)
class LipContour:
    """Pose template (the RIGID_POINTS, eye-normalised) and the lip contour's principal directions (mean, basis)."""

    template: np.ndarray  # (len(RIGID_POINTS), 3)
    mean: np.ndarray  # (3 * len(LIP_POINTS),)
    basis: np.ndarray  # (3 * len(LIP_POINTS), CONTOUR_COMPONENTS)


@lru_cache(maxsize=1)
def lip_contour_model() -> LipContour:
    """The stored lip-contour model (CONTOUR_PATH; ``python -m benchmarks.calibrate_landmarks --projection``)."""
    stored = json.loads(CONTOUR_PATH.read_text())
    return LipContour(*(np.array(stored[key], np.float64) for key in ("template", "mean", "basis")))


def eye_normalised(landmarks: np.ndarray) -> np.ndarray:
    """(n, P, 3) points with the outer eye corners' midpoint at 0, their line along x, their distance 1."""
    points = landmarks.astype(np.float64)
    right, left = points[:, EYE_OUTER_RIGHT], points[:, EYE_OUTER_LEFT]
    axis = left[:, :2] - right[:, :2]
    scale = np.maximum(np.linalg.norm(axis, axis=1), 1e-6)
    cos, sin = axis[:, 0] / scale, axis[:, 1] / scale
    centred = points - (right + left)[:, None] / 2
    x = cos[:, None] * centred[..., 0] + sin[:, None] * centred[..., 1]
    y = -sin[:, None] * centred[..., 0] + cos[:, None] * centred[..., 1]
    return np.stack([x, y, centred[..., 2]], axis=-1) / scale[:, None, None]


def pose_normalised_lips(landmarks: np.ndarray, template: np.ndarray) -> np.ndarray:
    """(n, 3 * len(LIP_POINTS)) lip-contour coordinates after the similarity transform (per frame) that best maps
    the frame's RIGID_POINTS onto `template` (least squares, Umeyama); frames with non-finite points give NaN."""
    points = eye_normalised(landmarks)
    rigid = points[:, RIGID_POINTS]
    centre = rigid.mean(axis=1, keepdims=True)
    source, target = rigid - centre, template - template.mean(axis=0)
    finite = np.isfinite(source).all(axis=(1, 2))
    out = np.full((len(points), 3 * len(LIP_POINTS)), np.nan)
    if finite.any():
        u, s, vt = np.linalg.svd(np.swapaxes(source[finite], 1, 2) @ target)
        flip = np.ones((int(finite.sum()), 3))
        flip[:, 2] = np.sign(np.linalg.det(u @ vt))
        rotation = (u * flip[:, None, :]) @ vt
        scale = (s * flip).sum(axis=1) / (source[finite] ** 2).sum(axis=(1, 2))
        lips = scale[:, None, None] * (points[finite][:, LIP_POINTS] - centre[finite]) @ rotation
        out[finite] = lips.reshape(len(lips), -1)
    return out


def lip_contour(landmarks: np.ndarray, contour: LipContour | None = None) -> np.ndarray:
    """(n, CONTOUR_COMPONENTS) the pose-normalised lip contour projected on the model's principal directions."""
    contour = contour or lip_contour_model()
    return (pose_normalised_lips(landmarks, contour.template) - contour.mean) @ contour.basis


def fit_lip_contour(landmark_series: list[np.ndarray]) -> LipContour:
    """The lip-contour model from (n, 478, 3) landmark series: the template is the median eye-normalised pose; the
    basis, the CONTOUR_COMPONENTS principal directions of the pose-normalised contours, each series' own mean
    removed (so that the directions are those of the lips' motion, not of the differences between faces)."""
    template = np.median(np.concatenate([eye_normalised(x)[:, RIGID_POINTS] for x in landmark_series]), axis=0)
    coordinates = [pose_normalised_lips(x, template) for x in landmark_series]
    coordinates = [c[np.isfinite(c).all(axis=1)] for c in coordinates]
    motion = np.concatenate([c - c.mean(axis=0) for c in coordinates if len(c)])
    _, _, vt = np.linalg.svd(motion, full_matrices=False)
    return LipContour(template, np.concatenate(coordinates).mean(axis=0), vt[:CONTOUR_COMPONENTS].T)
