"""Load test of the search service: latency percentiles and throughput over loopback HTTP.

Builds a synthetic gallery (the demo preset's test identities), a Pyramid model with
random weights (speed does not depend on training) and its features, then measures:

1. baseline: the model work alone, in process (decode + transform + forward + gallery search),
   measured last, with the service stopped;
2. the service over HTTP on 127.0.0.1, one client uploading pictures one after another;
3. the same with ``--clients`` concurrent clients;
4. concurrent searches with stored query features (``/search/query/{id}``: no model forward).

Each phase sends a bounded number of requests (``--requests`` per client) and stops at
``--phase-seconds``. The service runs in a child process (``reidkit.serve.serve``), bound to
loopback only, and is stopped at the end.

    .venv/bin/python benchmarks/bench_serve.py [--clients 4 --requests 50]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from reidkit.data import load_dataset
from reidkit.data.synthetic import generate
from reidkit.models import build_model
from reidkit.models.io import save_model
from reidkit.retrieval.features import extract_feature_set, save_features
from reidkit.serve import create_app

HOST = "127.0.0.1"  # loopback only: the benchmark never listens on a reachable address
WARMUP = 5  # requests sent before measuring (first forwards allocate and tune kernels)


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {f"p{q}": float(np.percentile(ms, q)) for q in (50, 90, 99)}


def run_clients(clients: int, requests: int, deadline_s: float,
                one_request: Callable[[httpx.Client, int], httpx.Response],
                base_url: str) -> dict[str, float]:
    """``clients`` threads, each sending up to ``requests`` requests until the deadline."""
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + deadline_s

    def client(worker: int) -> None:
        with httpx.Client(base_url=base_url, timeout=60) as http:
            for i in range(requests):
                if time.monotonic() > stop_at:
                    return
                start = time.perf_counter()
                response = one_request(http, worker * requests + i)
                elapsed = time.perf_counter() - start
                with lock:
                    if response.status_code == 200:
                        latencies.append(elapsed)
                    else:
                        failures.append(f"{response.status_code} {response.text[:100]}")

    threads = [threading.Thread(target=client, args=(w,)) for w in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return {"requests": len(latencies), "seconds": wall, "throughput": len(latencies) / wall,
            **percentiles(latencies)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_service(files: dict[str, Path], port: int) -> subprocess.Popen:
    code = ("import sys; from reidkit.serve import serve; "
            "serve(sys.argv[1], sys.argv[2], query_features=sys.argv[3], host=sys.argv[4], "
            "port=int(sys.argv[5]), log_level='warning')")
    proc = subprocess.Popen([sys.executable, "-c", code, str(files["checkpoint"]),
                             str(files["gallery"]), str(files["query"]), HOST, str(port)])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with code {proc.returncode}")
        try:
            if httpx.get(f"http://{HOST}:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("the service did not answer /health within 120 s")


def build(root: Path, args: argparse.Namespace) -> tuple[dict[str, Path], list[bytes]]:
    generate(root / "data", preset="demo", num_train_ids=2, workers=2)
    data = load_dataset("market1501", root / "data")
    torch.manual_seed(0)
    model = build_model("pyramid", num_classes=2, backbone=args.backbone, num_stripes=6)
    files = {"checkpoint": root / "model.safetensors"}
    save_model(files["checkpoint"], model, {"input_size": [args.height, args.width]})
    for name, records in (("query", data.query), ("gallery", data.gallery)):
        files[name] = root / f"{name}.npz"
        save_features(files[name], extract_feature_set(files["checkpoint"], records, num_workers=2,
                                                       progress=False))
    uploads = [Path(r.path).read_bytes() for r in data.query]
    return files, uploads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=50, help="requests per client and phase")
    parser.add_argument("--phase-seconds", type=float, default=90, help="time limit per phase")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        files, uploads = build(Path(tmp), args)
        port = free_port()
        proc = start_service(files, port)
        base_url = f"http://{HOST}:{port}"
        try:
            def upload(http: httpx.Client, i: int) -> httpx.Response:
                return http.post("/search", params={"k": args.k},
                                 files={"image": ("q.jpg", uploads[i % len(uploads)], "image/jpeg")})

            def stored(http: httpx.Client, i: int) -> httpx.Response:
                return http.post(f"/search/query/{i % len(uploads)}", params={"k": args.k})

            run_clients(1, WARMUP, args.phase_seconds, upload, base_url)
            phases = {
                "HTTP upload, 1 client": run_clients(1, args.requests, args.phase_seconds, upload,
                                                     base_url),
                f"HTTP upload, {args.clients} clients": run_clients(
                    args.clients, args.requests, args.phase_seconds, upload, base_url),
                f"HTTP stored query, {args.clients} clients": run_clients(
                    args.clients, args.requests, args.phase_seconds, stored, base_url),
            }
        finally:
            proc.terminate()
            proc.wait(timeout=30)

        # Baseline, with the service stopped: the same work in process, one request after another.
        app = create_app(files["checkpoint"], files["gallery"], query_features=files["query"])
        engine = app.state.engine
        gallery_size, dim = len(engine.gallery), engine.feature_dim

        def one_by_one() -> list[float]:
            times = []
            for i in range(WARMUP + args.requests):
                start = time.perf_counter()
                image = Image.open(io.BytesIO(uploads[i % len(uploads)])).convert("RGB")
                engine.search(engine.embed(image), args.k)
                times.append(time.perf_counter() - start)
            return times[WARMUP:]

        # In a worker thread, as the service runs it: on a loaded machine torch's OpenMP pool in
        # the main thread was measured 10-20x slower for the same forward.
        with ThreadPoolExecutor(1) as pool:
            direct = pool.submit(one_by_one).result()
        phases = {"in-process baseline (decode + model + search)": {
            "requests": len(direct), "seconds": sum(direct), "throughput": len(direct) / sum(direct),
            **percentiles(direct)}, **phases}

    names = list(phases)
    baseline, one, many = (phases[name] for name in names[:3])
    lines = [
        "## Search service load test (`reidkit.serve`)",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_serve.py --clients {args.clients} "
        f"--requests {args.requests}`",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end (shared machine).",
        "",
        f"Service: Pyramid {args.backbone} (6 stripes, random weights), input {args.height}x"
        f"{args.width}, gallery of {gallery_size} synthetic images x {dim}-d features, k={args.k}, "
        "uvicorn on 127.0.0.1, one model forward at a time (lock).",
        "",
        "| phase | requests | p50 ms | p90 ms | p99 ms | requests/s |",
        "|---|---:|---:|---:|---:|---:|",
        *(f"| {name} | {r['requests']} | {r['p50']:.1f} | {r['p90']:.1f} | {r['p99']:.1f} | "
          f"{r['throughput']:.1f} |" for name, r in phases.items()),
        "",
        f"- HTTP overhead: 1-client p50 / in-process p50 = {one['p50'] / baseline['p50']:.2f}x.",
        f"- Concurrency: {args.clients}-client throughput / 1-client throughput = "
        f"{many['throughput'] / one['throughput']:.2f}x (forwards are serialised, so this stays near "
        "1x on CPU; latency grows with the queue instead).",
        f"- Stored-query search (no forward) p50 = {phases[names[3]]['p50']:.1f} ms vs upload p50 "
        f"{many['p50']:.1f} ms at {args.clients} clients.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
