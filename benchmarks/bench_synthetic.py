"""Synthetic data: generation speed and difficulty (colour histograms vs. a small CNN).

Measures, in one run:
1. generation throughput of ``reidkit.data.synthetic.generate`` (images/s, 1 and N workers);
2. the learning-free colour-histogram baseline on the demo preset (several settings, the best
   counts), with alignment/occlusion switched off as a contrast;
3. a small CNN trained from scratch on the demo training set for a fixed number of epochs
   (softmax ID loss + batch-hard triplet), evaluated on the same query/gallery.
The data set is only useful if (3) is several times (2): colour alone must not solve it.

Run: ``.venv/bin/python benchmarks/bench_synthetic.py`` (the CNN dominates: 280 iterations, a few
minutes on two idle cores; 22 minutes when the cores were shared by ~8 jobs).
Writes ``benchmarks/results/synthetic.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from reidkit.data import load_dataset
from reidkit.data.synthetic import generate
from reidkit.evaluation import evaluate_rank
from reidkit.models.histogram import color_histogram_features

RESULTS = Path(__file__).parent / "results" / "synthetic.md"

HIST_SETTINGS = {
    "HSV 8x4x4, 6 stripes": dict(bins=(8, 4, 4), stripes=6, space="hsv"),
    "HSV 8x4x4, 6 stripes, sqrt": dict(bins=(8, 4, 4), stripes=6, space="hsv", sqrt=True),
    "HSV 16x4x4, 1 stripe, sqrt": dict(bins=(16, 4, 4), stripes=1, space="hsv", sqrt=True),
    "RGB 4x4x4, 6 stripes, sqrt": dict(bins=(4, 4, 4), stripes=6, space="rgb", sqrt=True),
}


def rank_metrics(qf: np.ndarray, gf: np.ndarray, ds) -> tuple[float, float]:
    """mAP and rank-1 (Market-1501 protocol) of Euclidean distances between features."""
    dist = (qf ** 2).sum(1)[:, None] + (gf ** 2).sum(1)[None, :] - 2.0 * qf @ gf.T
    res = evaluate_rank(dist, [r.pid for r in ds.query], [r.pid for r in ds.gallery],
                        [r.camid for r in ds.query], [r.camid for r in ds.gallery])
    return float(res.mAP), float(res.cmc[0])


def bench_generation(tmp: Path, workers: int) -> list[tuple[str, int, float]]:
    rows = []
    for w in sorted({1, workers}):
        stats = generate(tmp / f"gen_w{w}", "demo", workers=w)
        rows.append((f"demo, workers={w}", stats["images"], stats["images_per_second"]))
    return rows


def bench_histograms(roots: dict[str, Path]) -> list[tuple[str, str, float, float, float]]:
    rows = []
    for data_name, root in roots.items():
        ds = load_dataset("market1501", root)
        for name, opts in HIST_SETTINGS.items():
            start = time.perf_counter()
            qf = color_histogram_features([r.path for r in ds.query], **opts)
            gf = color_histogram_features([r.path for r in ds.gallery], **opts)
            m, r1 = rank_metrics(qf, gf, ds)
            rows.append((data_name, name, m, r1, time.perf_counter() - start))
    return rows


# --- the small CNN used as the "a little learning" reference -------------------------------


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class SmallNet(nn.Module):
    """A 7-conv residual net: 128x64 crops are area-downsampled to 64x32 first (CPU budget), then
    a stride-2 stem, three stride-2 stages and avg+max pooling."""

    def __init__(self, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True),
            _Block(width, 2 * width, 2), _Block(2 * width, 4 * width, 2),
            _Block(4 * width, 8 * width, 2))
        self.neck = nn.BatchNorm1d(8 * width)
        self.classifier = nn.Linear(8 * width, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(F.avg_pool2d(x, 2))
        f = f.mean((2, 3)) + f.amax((2, 3))
        return f, self.classifier(self.neck(f))


def _load_images(records) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(Image.open(r.path).convert("RGB"))
                                      for r in records])).permute(0, 3, 1, 2).contiguous()


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255.0 - 0.45) / 0.25


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flip, shift up to 8 px, per-channel gain jitter (a cheap colour-cast augmentation)."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = F.pad(x, (8, 8, 8, 8), mode="replicate")
    dy, dx = torch.randint(0, 17, (2,), generator=gen).tolist()
    x = padded[:, :, dy:dy + h, dx:dx + w]
    return x * (0.8 + 0.4 * torch.rand(n, 3, 1, 1, generator=gen))


def _batch_hard_triplet(f: torch.Tensor, y: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    d = torch.cdist(f, f)
    same = y[:, None] == y[None, :]
    hardest_pos = (d * same).amax(1)
    hardest_neg = d.masked_fill(same, float("inf")).amin(1)
    return F.relu(hardest_pos - hardest_neg + margin).mean()


def _pk_batches(labels: np.ndarray, p: int, k: int, rng: np.random.Generator):
    """One epoch (as many images as the training set) of batches of ``p`` ids x ``k`` images."""
    by_id = {pid: np.flatnonzero(labels == pid) for pid in np.unique(labels)}
    pids = np.array(list(by_id))
    for _ in range(len(labels) // (p * k)):
        yield np.concatenate([rng.choice(by_id[pid], k, replace=len(by_id[pid]) < k)
                              for pid in rng.choice(pids, p, replace=False)])


@torch.no_grad()
def _extract(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    model.eval()
    feats = []
    for i in range(0, len(images), 256):
        x = _normalise(images[i:i + 256])
        f = model(x)[0] + model(x.flip(3))[0]
        feats.append(F.normalize(f, dim=1))
    return torch.cat(feats).numpy()


def bench_cnn(root: Path, epochs: int, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    ds = load_dataset("market1501", root)
    train = _load_images(ds.train)
    labels = np.array([r.pid for r in ds.train])
    model = SmallNet(ds.num_train_pids)
    iters_per_epoch = len(labels) // 64
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, pct_start=0.15,
                                                total_steps=epochs * iters_per_epoch)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        for idx in _pk_batches(labels, 16, 4, rng):
            x = _normalise(_augment(train[idx].float(), gen))
            y = torch.from_numpy(labels[idx])
            f, logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=0.1) + _batch_hard_triplet(f, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    train_s = time.perf_counter() - start
    qf = _extract(model, _load_images(ds.query))
    gf = _extract(model, _load_images(ds.gallery))
    m, r1 = rank_metrics(qf, gf, ds)
    return {"mAP": m, "rank1": r1, "train_s": train_s, "epochs": epochs,
            "iterations": epochs * iters_per_epoch, "images": len(ds.train),
            "params_M": sum(p.numel() for p in model.parameters()) / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10, help="CNN training epochs")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads for the CNN")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        gen_rows = bench_generation(tmp, args.workers)
        demo = tmp / "gen_w1"
        generate(tmp / "aligned", "demo", misalign=False, occlusion=False)
        hist_rows = bench_histograms({"demo": demo, "demo, aligned, no occlusion": tmp / "aligned"})
        cnn = bench_cnn(demo, args.epochs, args.seed)

    best_hist = max((r for r in hist_rows if r[0] == "demo"), key=lambda r: r[2])
    lines = [
        "## Synthetic data: generation speed and difficulty",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_synthetic.py --epochs {args.epochs} "
        f"--workers {args.workers} --threads {args.threads}`  ",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores "
        f"(shared with other jobs: timings are upper bounds), Python {sys.version.split()[0]}, "
        f"torch {torch.__version__}, load average at the end "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}.",
        "",
        "### Generation (demo preset, 128x64 JPEG q95, written to disk)",
        "",
        "| run | images | images/s |",
        "|---|---:|---:|",
        *(f"| {name} | {n} | {rate:.0f} |" for name, n, rate in gen_rows),
        "",
        "### Colour-histogram baseline (no learning), Market-1501 protocol",
        "",
        "| data | features | mAP | rank-1 | seconds |",
        "|---|---|---:|---:|---:|",
        *(f"| {d} | {n} | {m:.1%} | {r1:.1%} | {s:.1f} |" for d, n, m, r1, s in hist_rows),
        "",
        "### Small CNN trained from scratch on the demo training set",
        "",
        f"SmallNet (7 convs, {cnn['params_M']:.2f} M parameters), input 128x64 "
        f"area-downsampled to 64x32 in the net, batch 16 ids x 4 images, AdamW + one-cycle "
        f"lr 2e-3, cross-entropy (label smoothing 0.1) + batch-hard "
        f"triplet (margin 0.3), flip/shift/colour-gain augmentation; {cnn['epochs']} epochs = "
        f"{cnn['iterations']} iterations over {cnn['images']} images in "
        f"{cnn['train_s']:.0f} s on {args.threads} threads.",
        "",
        "| model | mAP | rank-1 |",
        "|---|---:|---:|",
        f"| best colour histogram ({best_hist[1]}) | {best_hist[2]:.1%} | {best_hist[3]:.1%} |",
        f"| SmallNet | {cnn['mAP']:.1%} | {cnn['rank1']:.1%} |",
        "",
        f"CNN / histogram mAP ratio: {cnn['mAP'] / max(best_hist[2], 1e-9):.1f}x.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
