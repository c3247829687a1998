"""BlazeFace (MediaPipe face detection) on ai-edge-litert, with MediaPipe's anchors, decoding and weighted NMS.

The ``.tflite`` files carry no metadata, so the post-processing MediaPipe's graphs configure is done here:
SSD anchors with fixed size 1, box and keypoint offsets scaled by the input size, sigmoid scores of clipped
logits, and blending ("weighted") non-maximum suppression with IoU 0.3. Input is the image letterboxed
(aspect kept, black padding) into the model's square input, scaled to [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .base import RETRIES, Detection, FaceDetector, box_iou
from .model_files import find_model_file

NUM_KEYPOINTS = 6
SCORE_CLIP = 100.0  # MediaPipe's score_clipping_thresh
NMS_IOU = 0.3  # MediaPipe's min_suppression_threshold
AUTO_TILE_WINDOW = 3.75  # tiles="auto": tile windows at most 3.75 model inputs (720 px at 192) long ...
MAX_AUTO_TILES = 4  # ... with at most 4 x 4 tiles


@dataclass(frozen=True)
class BlazeFaceModel:
    """A BlazeFace model file and its SSD anchor options (MediaPipe ``SsdAnchorsCalculatorOptions``)."""

    filename: str
    input_size: int
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float  # > 0 adds a second anchor per layer and cell


MODELS = {
    # face_detection_short_range.pbtxt: faces within ~2 m, 896 anchors
    "short": BlazeFaceModel("face_detection_short_range.tflite", 128, (8, 16, 16, 16), 1.0),
    # face_detection_full_range.pbtxt: faces within ~5 m, 2304 anchors; MediaPipe's model_selection=1 (the
    # paper's setting) runs the sparse variant, which misses more small faces on our group photos
    "full": BlazeFaceModel("face_detection_full_range.tflite", 192, (4,), 0.0),
    "full-sparse": BlazeFaceModel("face_detection_full_range_sparse.tflite", 192, (4,), 0.0),
}


def ssd_anchors(input_size: int, strides: tuple[int, ...], interpolated_scale_aspect_ratio: float) -> np.ndarray:
    """Anchor centres (N, 2) as (x, y) in [0, 1], in MediaPipe's order.

    Both face models use ``fixed_anchor_size`` (anchor width = height = 1), so min/max scale (0.1484375,
    0.75) and the aspect ratio (1.0) only decide how many anchors each cell gets: one per layer, plus one
    when ``interpolated_scale_aspect_ratio`` > 0; consecutive layers with the same stride share one grid.
    """
    centres = []
    layer = 0
    while layer < len(strides):
        per_cell = 0
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            per_cell += 1 + (interpolated_scale_aspect_ratio > 0)
            last += 1
        cells = -(-input_size // strides[layer])  # ceil
        grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells  # anchor offset 0.5
        ys, xs = np.meshgrid(grid, grid, indexing="ij")
        cell_centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(cell_centres, per_cell, axis=0))
        layer = last
    return np.concatenate(centres)


def decode(
    regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray, input_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw outputs -> boxes (N, 4) as x0, y0, x1, y1, keypoints (N, 6, 2) and scores (N,), all in [0, 1]
    coordinates of the model input. Offsets are in input pixels (MediaPipe's x/y/w/h_scale = input size)."""
    raw = regressors.reshape(len(anchors), -1) / input_size
    centre = raw[:, 0:2] + anchors
    half = raw[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = raw[:, 4 : 4 + 2 * NUM_KEYPOINTS].reshape(-1, NUM_KEYPOINTS, 2) + anchors[:, None, :]
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1).astype(np.float64), -SCORE_CLIP, SCORE_CLIP)))
    return boxes, keypoints, scores


def weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's blending NMS: the best remaining box takes every box overlapping it by IoU > ``iou``;
    the group's boxes and keypoints are averaged weighted by score, and the group keeps the best score."""
    remaining = np.argsort(-scores, kind="stable")
    out = []
    while remaining.size:
        overlaps = box_iou(boxes[remaining[0]], boxes[remaining])
        group = remaining[overlaps > iou]
        if group.size == 0:  # a degenerate (zero-area) top box overlaps nothing, not even itself
            group = remaining[:1]
        weights = scores[group] / scores[group].sum()
        out.append(
            (weights @ boxes[group], np.tensordot(weights, keypoints[group], axes=1), float(scores[remaining[0]]))
        )
        remaining = remaining[~np.isin(remaining, group)]
    return out


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, tuple[int, int]]:
    """``image`` (H, W, 3) uint8 fitted into a size x size float32 input in [-1, 1] with black padding.
    Returns the input, the scale (input pixels per image pixel) and the (x, y) padding offset."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(np.ascontiguousarray(image), (new_w, new_h), interpolation=interpolation)
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    tensor = np.full((size, size, 3), -1.0, dtype=np.float32)
    tensor[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized * np.float32(2 / 255) - 1
    return tensor, scale, (pad_x, pad_y)


def auto_tiles(height: int, width: int, input_size: int) -> int:
    """Tiles per side for ``tiles="auto"``: the fewest T whose windows (4L / (3T + 1) px long, L the image's
    longer side, as they overlap by a quarter) are at most 3.75 model inputs long, capped at 4. With the 192 px
    full-range input (720 px windows): 1, one pass, up to 720 px; 2 up to 1260 px; 3 up to 1800 px; else 4."""
    longest = max(height, width)
    tiles = math.ceil((4 * longest / (AUTO_TILE_WINDOW * input_size) - 1) / 3)
    return max(1, min(MAX_AUTO_TILES, tiles))


class BlazeFaceDetector(FaceDetector):
    """MediaPipe BlazeFace. ``model``: "full" (default; full range, faces within ~5 m), "full-sparse" (the
    pruned full-range file MediaPipe's ``model_selection=1`` runs: slightly faster, finds fewer small faces)
    or "short" (faces within ~2 m). Detections scoring below ``min_score`` are dropped.

    ``tiles``: "auto" (default; :func:`auto_tiles` from the image size) or a number; T > 1 also runs the
    model on a T x T grid of windows overlapping by a quarter (small faces in a large photo: 28 of 29 instead
    of 0 on a 2048x922 group photo with ~40 px faces at T = 3; costs 1 + T**2 model runs) and merges
    everything with the same NMS; 1 is one pass. ``retry`` and ``no_face``: see :class:`FaceDetector` (the
    retry copies get one untiled pass each).
    """

    name = "blazeface"

    def __init__(
        self,
        model: str = "full",
        min_score: float = 0.5,
        tiles: int | str = "auto",
        threads: int | None = None,
        retry: str | Sequence[str] | None = RETRIES,
        no_face: str = "skip",
    ) -> None:
        super().__init__(retry, no_face)
        if model not in MODELS:
            raise ValueError(f"unknown BlazeFace model {model!r} (choose from {', '.join(MODELS)})")
        if not 0 <= min_score <= 1:
            raise ValueError(f"min_score must be in [0, 1], got {min_score}")
        if tiles != "auto" and (not isinstance(tiles, int) or tiles < 1):
            raise ValueError(f"tiles must be 'auto' or an integer >= 1, got {tiles!r}")
        from ai_edge_litert.interpreter import Interpreter

        self.model, self.min_score, self.tiles = model, min_score, tiles
        self.spec = MODELS[model]
        self.anchors = ssd_anchors(self.spec.input_size, self.spec.strides, self.spec.interpolated_scale_aspect_ratio)
        self.interpreter = Interpreter(model_path=str(find_model_file(self.spec.filename)), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        outputs = {int(d["shape"][-1]): d["index"] for d in self.interpreter.get_output_details()}
        self.regressor_index, self.score_index = outputs[4 + 2 * NUM_KEYPOINTS], outputs[1]

    def __repr__(self) -> str:
        return (
            f"BlazeFaceDetector(model={self.model!r}, min_score={self.min_score}, tiles={self.tiles!r}, "
            f"retry={','.join(self.retries) or 'none'}, no_face={self.no_face!r})"
        )

    def raw_detections(
        self, image: np.ndarray, min_score: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (N, 4) x0, y0, x1, y1 and keypoints (N, 6, 2) in image pixels, and scores (N,), of every
        anchor scoring at least ``min_score`` (default: the detector's; before NMS)."""
        size = self.spec.input_size
        tensor, scale, (pad_x, pad_y) = letterbox(image, size)
        self.interpreter.set_tensor(self.input_index, tensor[None])
        self.interpreter.invoke()
        boxes, keypoints, scores = decode(
            self.interpreter.get_tensor(self.regressor_index)[0],
            self.interpreter.get_tensor(self.score_index)[0],
            self.anchors,
            size,
        )
        keep = scores >= (self.min_score if min_score is None else min_score)
        offset = np.array([pad_x, pad_y], dtype=np.float32)
        boxes = (boxes[keep].reshape(-1, 2, 2) * size - offset).reshape(-1, 4) / scale
        keypoints = (keypoints[keep] * size - offset) / scale
        return boxes, keypoints, scores[keep]

    def tile_count(self, height: int, width: int) -> int:
        """Tiles per side for an image of this size (``tiles``, or :func:`auto_tiles` for "auto")."""
        return auto_tiles(height, width, self.spec.input_size) if self.tiles == "auto" else self.tiles

    def tile_windows(self, height: int, width: int, tiles: int | None = None) -> list[tuple[int, int, int, int]]:
        """The whole image, then a T x T grid of windows (x, y, w, h) overlapping by a quarter (T: ``tiles``,
        default :meth:`tile_count`)."""
        tiles = self.tile_count(height, width) if tiles is None else tiles
        windows = [(0, 0, width, height)]
        if tiles > 1:
            span = tiles - (tiles - 1) / 4  # tiles per side, less the quarter overlaps
            tw, th = max(1, round(width / span)), max(1, round(height / span))
            xs = np.linspace(0, width - tw, tiles).round().astype(int)
            ys = np.linspace(0, height - th, tiles).round().astype(int)
            windows += [(int(x), int(y), tw, th) for y in ys for x in xs]
        return windows

    def find(self, image: np.ndarray, tiles: int | None = None, min_score: float | None = None) -> list[Detection]:
        parts = []
        for x, y, w, h in self.tile_windows(*image.shape[:2], tiles):
            boxes, keypoints, scores = self.raw_detections(image[y : y + h, x : x + w], min_score)
            offset = np.array([x, y], dtype=np.float32)
            parts.append((boxes + np.tile(offset, 2), keypoints + offset, scores))
        boxes, keypoints, scores = (np.concatenate(p) for p in zip(*parts))
        detections = []
        for box, points, score in weighted_nms(boxes, keypoints, scores):
            x0, y0, x1, y1 = (float(v) for v in box)
            landmarks = tuple((float(px), float(py)) for px, py in points)
            detections.append(Detection((x0, y0, x1 - x0, y1 - y0), score, landmarks))
        return detections

    def find_again(self, image: np.ndarray, min_score: float) -> list[Detection]:
        return self.find(image, tiles=1, min_score=min_score)
