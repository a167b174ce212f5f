"""Running a model over many images: the feature extraction every evaluation and search uses."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn


@torch.inference_mode()
def extract_features(
    model: nn.Module,
    batches: Iterable,
    device: str | torch.device = "cpu",
    *,
    flip: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Eval-mode features (N, D) float32 for ``batches`` of ``(images, ...)`` in their order.

    ``flip`` averages each feature with that of the mirrored image (a common test-time gain).
    ``on_batch(n)`` is called after each batch with its size, e.g. to advance a progress bar.
    """
    was_training = model.training
    model.eval()
    chunks = []
    try:
        for batch in batches:
            images = (batch[0] if isinstance(batch, (list, tuple)) else batch).to(device)
            # NHWC input runs the convolutions about 30 % faster on CPU (benchmarks/extraction)
            images = images.contiguous(memory_format=torch.channels_last)
            feats = model(images).float()
            if flip:
                feats = (feats + model(images.flip(-1)).float()) / 2
            chunks.append(feats.cpu().numpy())
            if on_batch is not None:
                on_batch(len(images))
    finally:
        model.train(was_training)
    if not chunks:
        raise ValueError("no images to extract features from")
    return np.concatenate(chunks).astype(np.float32, copy=False)
