"""Feature extraction throughput on the CPU: PyTorch vs. the exported ONNX graph in onnxruntime.

Run: .venv/bin/python benchmarks/bench_onnx.py [--backbone resnet50] [--batch-size 32] [--repeats 5]

One model, Pyramid (random weights; speed does not depend on them) at 256x128, exported with
``reidkit.export.export_onnx`` (parity-checked). PyTorch runs it in eval mode under
``torch.inference_mode``; onnxruntime with the CPU provider and default graph optimisations, both
with all cores. The two run interleaved, one batch each per round after a warm-up round, and the
median batch time is reported, so background load affects both alike. Writes
benchmarks/results/onnx.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reidkit.export import export_onnx  # noqa: E402
from reidkit.models import build_model  # noqa: E402

SIZE = (256, 128)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/onnx.md")
    args = parser.parse_args()
    import onnxruntime as ort

    torch.manual_seed(0)
    model = build_model("pyramid", 751, backbone=args.backbone).eval()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        report = export_onnx(model, Path(tmp) / "pyramid.onnx", input_size=SIZE)
        export_s = time.perf_counter() - start
        session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    x = torch.randn(args.batch_size, 3, *SIZE)
    x_np = x.numpy()
    variants: dict[str, Callable[[], np.ndarray]] = {
        "PyTorch (eval, inference_mode)": lambda: model(x).numpy(),
        f"onnxruntime {ort.__version__} (CPU)": lambda: session.run(None, {"images": x_np})[0],
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    outputs: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        for round_ in range(args.repeats + 1):
            for name, run in variants.items():
                start = time.perf_counter()
                outputs[name] = run()
                if round_:  # round 0 warms up allocators, thread pools and ORT's graph
                    times[name].append(time.perf_counter() - start)
    torch_out, ort_out = outputs.values()
    diff = float(np.abs(torch_out - ort_out).max())

    median = {name: statistics.median(samples) for name, samples in times.items()}
    base = median[next(iter(variants))]
    rows = [f"| {name} | {median[name]:.3f} | {args.batch_size / median[name]:.1f} | "
            f"{base / median[name]:.2f} |" for name in variants]
    print("\n".join(rows))
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    command = (f".venv/bin/python benchmarks/bench_onnx.py --backbone {args.backbone} "
               f"--batch-size {args.batch_size} --repeats {args.repeats}")
    markdown = "\n".join([
        f"## ONNX vs. PyTorch feature extraction (Pyramid {args.backbone}, CPU)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores ({torch.get_num_threads()} torch "
        f"threads), torch {torch.__version__}, onnxruntime {ort.__version__}, Python "
        f"{platform.python_version()}; load average at the end {load}  ",
        f"Input {args.batch_size} x 3 x {SIZE[0]} x {SIZE[1]}, random weights, median of "
        f"{args.repeats} interleaved batches after one warm-up round. Export (opset "
        f"{report.opset}, with its parity check) took {export_s:.0f} s; parity max |diff| "
        f"{report.max_abs_diff:.2g} on batches of 2 and 3, {diff:.2g} on this batch.",
        "",
        "| runtime | s / batch | images / s | speed vs. PyTorch |",
        "|---|---:|---:|---:|",
        *rows,
        "",
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
