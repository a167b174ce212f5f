"""People detectors for video frames: OpenCV's HOG people detector, or a torchvision model.

A detector maps a BGR frame (H, W, 3 uint8, as OpenCV decodes it) to boxes (N, 4) float
``x1 y1 x2 y2`` in frame pixels and scores (N,) in [0, 1]. :func:`filter_detections` then keeps
people-shaped boxes of a usable size and removes duplicates by non-maximum suppression.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import nms

from reidkit.footage.video import FootageError, import_cv2

# COCO's label of a person, used by every torchvision detection model.
COCO_PERSON = 1
TORCHVISION_DETECTORS = (
    "fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn", "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2",
    "fcos_resnet50_fpn", "ssd300_vgg16", "ssdlite320_mobilenet_v3_large",
)


class DetectorError(FootageError):
    """A detector that cannot be built as asked (unknown name, missing or mismatched weights)."""


@dataclass(frozen=True)
class DetectionFilter:
    """Which detections become crops.

    ``min_score``: lowest score kept. ``aspect``: (lowest, highest) height / width of a person box.
    ``min_height`` / ``max_height``: box height range in frame pixels (None: no upper bound; a
    bound near the scene's tallest person removes HOG's boxes around groups). ``nms_iou``: boxes
    overlapping a higher-scored box by more than this intersection-over-union are dropped.
    """

    min_score: float = 0.6
    aspect: tuple[float, float] = (1.4, 4.0)
    min_height: int = 40
    max_height: int | None = None
    nms_iou: float = 0.4

    def __post_init__(self) -> None:
        lo, hi = self.aspect
        if not 0 < lo <= hi:
            raise DetectorError(f"aspect must be (low, high) height/width ratios with 0 < low <= high, "
                             f"got {self.aspect}")
        if not 0 < self.nms_iou <= 1:
            raise DetectorError(f"nms_iou must be in (0, 1], got {self.nms_iou}")


def filter_detections(boxes: np.ndarray, scores: np.ndarray, rule: DetectionFilter,
                      frame_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes clipped to the frame and kept by ``rule``, highest score first."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    h, w = frame_shape[:2]
    boxes = np.stack([boxes[:, 0].clip(0, w), boxes[:, 1].clip(0, h),
                      boxes[:, 2].clip(0, w), boxes[:, 3].clip(0, h)], axis=1)
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    ratio = np.divide(bh, bw, out=np.zeros_like(bh), where=bw > 0)
    keep = ((scores >= rule.min_score) & (bh >= rule.min_height)
            & (bh <= (rule.max_height if rule.max_height is not None else np.inf))
            & (ratio >= rule.aspect[0]) & (ratio <= rule.aspect[1]))
    boxes, scores = boxes[keep], scores[keep]
    if len(boxes):
        order = nms(torch.from_numpy(boxes), torch.from_numpy(scores), rule.nms_iou).numpy()
        boxes, scores = boxes[order], scores[order]
    return boxes, scores


class HOGDetector:
    """OpenCV's HOG + linear SVM people detector (Dalal and Triggs), no download needed.

    It finds people of at least 64 x 128 pixels (its window), so frames are first enlarged by
    ``upscale`` (1.5 finds the ~35 x 90 px people of vtest.avi). Scores are the SVM margins put
    through a logistic function: 0.5 is the detector's own threshold.
    """

    name = "hog"

    def __init__(self, upscale: float = 1.5, win_stride: int = 8, scale: float = 1.05) -> None:
        cv2 = import_cv2()

        if not hasattr(cv2, "HOGDescriptor_getDefaultPeopleDetector"):
            raise DetectorError(f"this OpenCV ({cv2.__version__}) has no HOG people detector (OpenCV 5 "
                                "dropped it): pip install 'opencv-python<5'")
        if upscale <= 0 or win_stride < 1 or scale <= 1:
            raise DetectorError(f"HOG needs upscale > 0, win_stride >= 1 and scale > 1; got {upscale}, "
                             f"{win_stride}, {scale}")
        self._cv2 = cv2
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.upscale, self.win_stride, self.scale = upscale, win_stride, scale

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cv2 = self._cv2
        image = frame if self.upscale == 1 else cv2.resize(
            frame, None, fx=self.upscale, fy=self.upscale, interpolation=cv2.INTER_LINEAR)
        rects, weights = self.hog.detectMultiScale(
            image, winStride=(self.win_stride, self.win_stride), padding=(8, 8), scale=self.scale)
        rects = np.asarray(rects, dtype=np.float32).reshape(-1, 4) / self.upscale
        boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
        margins = np.asarray(weights, dtype=np.float32).reshape(-1)
        return boxes, 1.0 / (1.0 + np.exp(-margins))


class TorchvisionDetector:
    """A torchvision detection model (COCO classes) with weights from a local file; keeps people.

    ``weights`` is a ``.pth``/``.pt`` state dict (loaded without unpickling code) or a
    ``.safetensors`` file, e.g. torchvision's released COCO weights saved to disk beforehand.
    """

    def __init__(self, arch: str, weights: str | Path, device: str = "cpu") -> None:
        import torchvision.models.detection as detection

        if arch not in TORCHVISION_DETECTORS:
            raise DetectorError(f"unknown torchvision detector {arch!r}; choose one of "
                                f"{', '.join(TORCHVISION_DETECTORS)}")
        weights = Path(weights)
        if not weights.is_file():
            raise DetectorError(f"detector weights {weights} do not exist; save the model's state "
                                f"dict there (torch.save(model.state_dict(), '{weights}'))")
        try:
            if weights.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(weights))
            else:
                state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
            raise DetectorError(f"cannot read detector weights {weights}: {exc}") from None
        model = getattr(detection, arch)(weights=None, weights_backbone=None, num_classes=91)
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise DetectorError(f"{weights} does not hold {arch} weights with the 91 COCO classes: "
                                f"{str(exc).splitlines()[0]}") from None
        self.model = model.eval().to(device)
        self.device = device
        self.name = arch

    @torch.inference_mode()
    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rgb = torch.from_numpy(np.ascontiguousarray(frame[:, :, ::-1])).permute(2, 0, 1)
        out = self.model([rgb.to(self.device, torch.float32).div_(255)])[0]
        person = out["labels"] == COCO_PERSON
        return out["boxes"][person].cpu().numpy(), out["scores"][person].cpu().numpy()


def build_detector(name: str = "hog", weights: str | Path | None = None, *, device: str = "cpu",
                   upscale: float = 1.5) -> HOGDetector | TorchvisionDetector:
    """``"hog"`` (OpenCV, enlarged by ``upscale``) or a torchvision architecture with ``weights``."""
    if name == "hog":
        if weights is not None:
            raise DetectorError("the HOG detector takes no weights file; name a torchvision detector "
                                f"({', '.join(TORCHVISION_DETECTORS[:2])}, ...) to use one")
        return HOGDetector(upscale=upscale)
    if weights is None:
        raise DetectorError(f"the {name} detector needs a local weights file (--detector-weights); "
                            "nothing is downloaded")
    return TorchvisionDetector(name, weights, device)
