"""Feature-extraction throughput: the Pyramid model vs. torchvision's plain ResNet-50.

Run: .venv/bin/python benchmarks/bench_extraction.py [--batch-size 32] [--repeats 5] [--device cpu]

All models are in eval mode under torch.inference_mode, on random weights (speed does not depend
on them), input 256x128. Baselines: torchvision's resnet50 forward to its 2048-d pooled feature
(fc removed), with its standard last stride 2 and with last stride 1 (the backbone the Pyramid
actually runs); the Pyramid's extra cost over the latter is its 21 branch heads. Each variant is
also timed in channels_last memory format. The variants run interleaved, one batch each per
round, after a warm-up round, and the median batch time is reported, so background load
affects all variants alike. Writes benchmarks/results/extraction.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reidkit.models import build_model  # noqa: E402
from reidkit.models.inference import extract_features  # noqa: E402
from reidkit.models.pyramid import pyramid_pool  # noqa: E402

EXTRACT = "reidkit extract_features(Pyramid), channels_last input"


def torchvision_resnet50(last_stride: int) -> nn.Module:
    """torchvision's resnet50 up to its pooled feature (fc removed)."""
    net = torchvision.models.resnet50(weights=None)
    if last_stride == 1:
        net.layer4[0].conv2.stride = (1, 1)
        net.layer4[0].downsample[0].stride = (1, 1)
    net.fc = nn.Identity()
    return net


def machine_info(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores "
            f"({torch.get_num_threads()} torch threads), torch {torch.__version__}, "
            f"Python {platform.python_version()}; load average {load}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/extraction.md")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    tv2, tv1 = "torchvision resnet50, last stride 2, GAP", "torchvision resnet50, last stride 1, GAP"
    pyramid = "reidkit Pyramid resnet50, last stride 1, 21 branches"
    heads = "  of which pyramid pooling + 21 heads (on the backbone map)"
    factories: dict[str, Callable[[], nn.Module]] = {
        tv2: lambda: torchvision_resnet50(2),
        tv1: lambda: torchvision_resnet50(1),
        pyramid: lambda: build_model("pyramid", 751, backbone="resnet50"),
    }
    x = torch.randn(args.batch_size, 3, 256, 128, device=device)
    variants: dict[str, Callable[[], torch.Tensor]] = {}
    for fmt, suffix in ((torch.contiguous_format, ""), (torch.channels_last, ", channels_last")):
        for name, make in factories.items():
            model = make().eval().to(device, memory_format=fmt)
            variants[name + suffix] = lambda m=model, xin=x.contiguous(memory_format=fmt): m(xin)
        # the Pyramid's own part, timed directly: pooling and heads on a ready backbone map
        with torch.inference_mode():
            fmap = model.backbone(x.contiguous(memory_format=fmt))
        variants[heads + suffix] = lambda m=model, f=fmap: torch.cat(
            [h.reduce(p) for h, p in zip(m.heads, pyramid_pool(f, m.num_stripes, m.levels), strict=True)], 1)

    # what users run: reidkit's extraction path on a model as load_model returns it (NCHW weights)
    extractor = build_model("pyramid", 751, backbone="resnet50").eval().to(device)
    variants[EXTRACT] = lambda m=extractor: extract_features(m, [x], device)

    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for round_ in range(args.repeats + 1):
            for name, run in variants.items():
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                run()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if round_:  # round 0 warms up allocators and kernels
                    times[name].append(time.perf_counter() - start)

    median = {name: statistics.median(samples) for name, samples in times.items()}
    base = median[tv2]
    print(f"goal row: {EXTRACT} vs. {tv2}: {base / median[EXTRACT]:.2f} (goal >= 1.0)")
    rows = []
    for name in variants:
        rows.append(f"| {name} | {median[name]:.3f} | {args.batch_size / median[name]:.1f} | "
                    f"{base / median[name]:.2f} |")
        print(rows[-1])

    command = (f".venv/bin/python benchmarks/bench_extraction.py --batch-size {args.batch_size} "
               f"--repeats {args.repeats} --device {args.device}")
    share = {suffix: 100 * median[heads + suffix] / median[pyramid + suffix]
             for suffix in ("", ", channels_last")}
    best = min((v for v in variants if not v.startswith(heads)), key=median.get)
    markdown = "\n".join([
        "## Feature extraction throughput (Pyramid vs. torchvision ResNet-50)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine_info(device)}  ",
        f"Input {args.batch_size} x 3 x 256 x 128, eval mode, torch.inference_mode, median of "
        f"{args.repeats} interleaved batches after one warm-up round.",
        "",
        "| model | s / batch | images / s | speed vs. torchvision stride 2 |",
        "|---|---|---|---|",
        *rows,
        "",
        f"**Goal row** — `{EXTRACT}` (reidkit's extraction path, model as loaded) vs. plain "
        f"torchvision resnet50 (stride 2, contiguous): **{base / median[EXTRACT]:.2f}** "
        "(goal >= 1.0).  ",
        f"Pyramid / plain resnet50 (stride 2) throughput ratio: {base / median[pyramid]:.2f} "
        f"(contiguous), {median[tv2 + ', channels_last'] / median[pyramid + ', channels_last']:.2f} "
        f"(both channels_last), {base / median[pyramid + ', channels_last']:.2f} (Pyramid "
        "channels_last vs. plain contiguous).  ",
        f"The Pyramid's pooling and 21 heads (2048->128 + BN + ReLU each) take "
        f"{share['']:.1f}% (contiguous) / {share[', channels_last']:.1f}% (channels_last) of its "
        "time; the rest of the gap to the plain resnet50 is last stride 1, which runs layer4 on a "
        "map four times larger (the paper's design, kept). On a loaded machine the full-model "
        "rows vary by several percent between runs; the heads' share is measured directly.  ",
        f"Fastest variant: {best}.",
        "",
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
