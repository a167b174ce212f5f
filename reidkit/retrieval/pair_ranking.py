"""Ranking a gallery by MTDnet's verification scores of (query, gallery) image pairs.

The score of a pair is the "same person" probability averaged over 8 passes through the
verification head: each image as is or mirrored (written q', g'), in both input orders::

    (q, g), (g, q), (q', g), (g, q'), (q, g'), (g', q), (q', g'), (g', q')

The set is closed under swapping q and g, so ``score(q, g) == score(g, q)``.

Cost. The trunk runs once per image and once per mirrored image; its maps are kept. conv3, the
costliest layer of the head, is linear in the concatenated maps, so each image's contribution
as first and as second input is computed once per tile of pairs
(:meth:`reidkit.models.mtdnet.VerificationHead.conv3_parts`) and a pair's conv3 response is a
sum. Only ReLU, conv4, conv5, pool5 and fc6-fc8 run per pair and pass. Memory: the kept maps take
``2 * (Q + G) * 256 * 13 * 13 * 4`` bytes (about 350 KB per image for CaffeNet at 227x227).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from rich.console import Console
from torch import Tensor

from reidkit.losses.verification import same_probability
from reidkit.models.mtdnet import MTDNet, VerificationHead
from reidkit.models.spec import inference_model, model_spec
from reidkit.progress import progress as progress_display

Images = Tensor | Iterable


@torch.inference_mode()
def pair_score_matrix(
    model: MTDNet,
    queries: Images,
    gallery: Images,
    batch_size: int = 32,
    progress: bool = True,
) -> np.ndarray:
    """Probability (Q, G) float32 that each (query, gallery) pair shows one person, 8-pass mean.

    ``queries`` and ``gallery`` are image tensors (N, 3, H, W) or iterables of batches (a
    DataLoader yielding tensors or ``(images, ...)`` tuples), in the model's input convention.
    ``batch_size`` is the number of pairs per verification-head call (each runs 8 passes) and the
    number of images per trunk call. Runs on the model's device, in eval mode.
    """
    model = inference_model(model)
    if not model_spec(model).scores_pairs:
        raise ValueError("pair scores need an MTDNet with a verification head; the 'rnk' "
                         "variants have none and rank by embedding distances")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        q_maps = _trunk_maps(model, queries, batch_size, device, "queries")
        g_maps = _trunk_maps(model, gallery, batch_size, device, "gallery")
        num_q, num_g = len(q_maps[0]), len(g_maps[0])
        # Tiles of bq x bg pairs. The gallery's conv3 parts are recomputed once per query block
        # (4 half-width convolutions per image, about 0.3x one pair's 8 passes), which adds
        # about 0.3 / bq to the cost of the head, instead of keeping them all in memory.
        bq = min(num_q, batch_size)
        bg = max(1, batch_size // bq)
        head = model.verifier
        scores = np.empty((num_q, num_g), dtype=np.float32)
        with progress_display(Console(stderr=True), disable=not progress, transient=True) as bar:
            task = bar.add_task("scoring pairs", total=num_q * num_g)
            for q0 in range(0, num_q, bq):
                q_parts = _conv3_parts(head, q_maps, slice(q0, q0 + bq))
                for g0 in range(0, num_g, bg):
                    g_parts = _conv3_parts(head, g_maps, slice(g0, g0 + bg))
                    block = _block_scores(head, q_parts, g_parts)
                    scores[q0:q0 + bq, g0:g0 + bg] = block.cpu().numpy()
                    bar.advance(task, block.numel())
    finally:
        model.train(was_training)
    return scores


def pair_distance_matrix(
    model: MTDNet, queries: Images, gallery: Images, batch_size: int = 32, progress: bool = True
) -> np.ndarray:
    """``1 - pair_score_matrix(...)``: a (Q, G) distance matrix for ``evaluate_rank``."""
    return 1.0 - pair_score_matrix(model, queries, gallery, batch_size, progress)


def _trunk_maps(model: MTDNet, images: Images, batch_size: int, device: torch.device,
                what: str) -> tuple[Tensor, Tensor]:
    """Trunk maps of the images and of their mirror images, both (N, C, h, w)."""
    if isinstance(images, Tensor):
        batches: Iterable = images.split(batch_size)
    else:
        batches = (b[0] if isinstance(b, (list, tuple)) else b for b in images)
    plain, mirrored = [], []
    for batch in batches:
        batch = batch.to(device)
        plain.append(model.trunk_features(batch))
        mirrored.append(model.trunk_features(batch.flip(-1)))
    if not plain or sum(len(m) for m in plain) == 0:
        raise ValueError(f"no {what} images to score")
    return torch.cat(plain), torch.cat(mirrored)


def _conv3_parts(head: VerificationHead, maps: tuple[Tensor, Tensor],
                 rows: slice) -> dict[str, Tensor]:
    """conv3 parts of a block of images: keys ``first``/``second`` x plain/``_mirror``."""
    first, second = head.conv3_parts(maps[0][rows])
    first_m, second_m = head.conv3_parts(maps[1][rows])
    return {"first": first, "second": second, "first_mirror": first_m, "second_mirror": second_m}


def _block_scores(head: VerificationHead, q: dict[str, Tensor], g: dict[str, Tensor]) -> Tensor:
    """Mean "same" probability (bq, bg) over the 8 passes listed in the module docstring."""
    def query_first(qk: str, gk: str) -> Tensor:
        return q[f"first{qk}"][:, None] + g[f"second{gk}"][None, :]

    def gallery_first(gk: str, qk: str) -> Tensor:
        return g[f"first{gk}"][None, :] + q[f"second{qk}"][:, None]

    m = "_mirror"
    passes = torch.stack([
        query_first("", ""), gallery_first("", ""),      # (q, g), (g, q)
        query_first(m, ""), gallery_first("", m),        # (q', g), (g, q')
        query_first("", m), gallery_first(m, ""),        # (q, g'), (g', q)
        query_first(m, m), gallery_first(m, m),          # (q', g'), (g', q')
    ])  # conv3 outputs (8, bq, bg, 384, h, w)
    probs = same_probability(head.from_conv3(passes.flatten(0, 2)))
    return probs.view(passes.shape[:3]).mean(dim=0)
