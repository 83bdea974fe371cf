"""Load test of serve.py: latency and images/s of the service under concurrent clients, against
predict.py's own code scoring the same images in process, and the service's memory over the run.

What is used (generated here unless -p is given): the demo brick dataset at 64 px, an ``mvtecCAE``
trained with the L2 loss for 2 epochs and finetuned with finetune.py's defaults (``--image-score``
to change). The images sent are the demo's 64x64 PNG files (test and training images).

1. The reference, in this process: ``processing.workflow.predict.predict`` on ``--requests`` x
   ``--images-per-request`` files (hard links to the demo images under distinct names): the rate of
   its streaming loop (read, model, maps, decision, masks at the original size, CSV;
   ``runs[-1].images_per_second``), best of two runs. Its rows are also what every answer of the
   service is checked against (score to 1e-9, verdict, area, box).
2. The service: ``python serve.py`` as a subprocess on 127.0.0.1 and a free port; after a warm-up,
   ``--clients`` threads (one httpx client each, keep-alive) send ``--requests`` POST /predict
   requests (multipart, ``--images-per-request`` files each) as fast as the answers come back. Printed:
   latency p50/p99, images/s over the whole run, the model worker's mean batch, failed requests (an
   error, a status other than 200, or an answer that differs from predict.py's), and the service's
   peak and current RSS (/proc/<pid>/status VmHWM, VmRSS) after the warm-up and at the end.

The clients run on the same machine as the service and take CPU from it (on 2 cores, a good part):
the ratio is a lower bound of what the service does for remote clients.

    python benchmarks/bench_serve.py                       # 2,000 requests from 8 clients (a few minutes on 2 cores)
    python benchmarks/bench_serve.py --quick               # 200 requests
    python benchmarks/bench_serve.py -p <model folder> --results-dir results --images <folder of images>
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

SIZE = 64
WARMUP_REQUESTS = 40
START_TIMEOUT_S = 300


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-p", "--path", default=None, help="model folder to serve (default: train one on the demo dataset)")
    parser.add_argument("-r", "--result", default=None, help="its finetuning result (serve.py -r)")
    parser.add_argument("--results-dir", default=None, help="where its finetuning results are (with -p; default: results)")
    parser.add_argument("--images", default=None, help="folder of images to send (with -p; default: the demo images)")
    parser.add_argument("--image-score", default=None, choices=["component", "max"], help="finetune.py --image-score of the model trained "
            "here (default: finetune.py's)")
    parser.add_argument("--requests", type=int, default=2000, help="requests sent")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--images-per-request", type=int, default=1, help="files in each request")
    parser.add_argument("--batch", type=int, default=16, help="serve.py --batch and predict's batch")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="serve.py --max-wait-ms")
    parser.add_argument("--quick", action="store_true", help="200 requests")
    parser.add_argument("--work", default=None, help="working folder (default: a temporary one, removed at the end)")
    return parser.parse_args(argv)


def train_demo_model(work: Path, image_score: str | None) -> tuple[Path, Path, Path]:
    """(model folder, results folder, images folder) of a 64 px mvtecCAE trained here for 2 epochs."""
    import finetune
    import train
    from processing.data.demo import make_demo_dataset

    make_demo_dataset(work / "brick", image_size=SIZE, n_train=40, n_test_good=10, n_test_defect=6, texture="brick", seed=0)
    folder = train.main(["-d", str(work / "brick"), "-a", "mvtecCAE", "-l", "l2", "-b", "8", "--image-size", str(SIZE),
                         "--epochs", "2", "--lr", "1e-3", "--output-dir", str(work / "models")])
    extra = ["--image-score", image_score] if image_score else []
    finetune.main(["-p", str(folder), "--results-dir", str(work / "results"), *extra])
    return folder, work / "results", work / "brick"


def pool_of(images: Path) -> list[Path]:
    from processing.data.inputs import collect_images

    return sorted(collect_images([str(images)]))


def linked_copies(work: Path, pool: list[Path], count: int) -> dict[Path, Path]:
    """`count` files (hard links to `pool`, cycled, distinct names): {copy: the pool file}."""
    folder = work / f"sent_{count}"
    copies = {}
    for index in range(count):
        source = pool[index % len(pool)]
        target = folder / f"{index // 500:04d}" / f"{index:06d}{source.suffix.lower()}"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
        copies[target] = source
    return copies


def reference(work: Path, folder: Path, results: Path, result: str | None, copies: dict[Path, Path], batch: int) -> tuple[float, dict]:
    """(images/s of predict's streaming loop, best of two; {pool file: its row})."""
    from processing.workflow.predict import PredictConfig, predict

    inputs = sorted({str(path.parent) for path in copies})
    rates = []
    for _ in range(2):
        config = PredictConfig(path=str(folder), inputs=inputs, output=str(work / "predicted"), result=result, batch_size=batch,
                               results_root=str(results), overwrite=True, gallery=0)
        rates.append(predict(config).settings["runs"][-1]["images_per_second"])
    with open(work / "predicted" / "predictions.csv", newline="") as handle:
        rows = {copies[Path(row["path"])]: row for row in csv.DictReader(handle)}
    return max(rates), rows


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def memory_mib(pid: int) -> dict[str, float]:
    """VmHWM (peak RSS) and VmRSS of a process, in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def start_service(args, folder: Path, results: Path, port: int, log: Path) -> subprocess.Popen:
    import httpx

    argv = [sys.executable, str(ROOT / "serve.py"), "-p", str(folder), "--results-dir", str(results), "--port", str(port),
            "--batch", str(args.batch), "--max-wait-ms", str(args.max_wait_ms), "--log-every", "3600"]
    if args.result:
        argv += ["-r", args.result]
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"serve.py exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.terminate()
    raise SystemExit(f"serve.py did not answer /health within {START_TIMEOUT_S} s: {log.read_text()[-2000:]}")


def matches(item: dict, row: dict) -> bool:
    """Whether a /predict item carries predict.py's numbers for the same file."""
    box = None if row["bbox_x0"] == "" else {key: int(row[f"bbox_{key}"]) for key in ("x0", "y0", "x1", "y1")}
    area = None if row["defect_area_px"] == "" else int(row["defect_area_px"])
    return (
        item["error"] is None
        and abs(item["score"] - float(row["score"])) <= 1e-9 * max(1.0, abs(float(row["score"])))
        and int(item["defective"]) == int(row["defective"])
        and item["defect_area_px"] == area
        and item["bbox"] == box
    )


def load_test(port: int, pool: list[Path], rows: dict, requests: int, clients: int, per_request: int):
    """(latencies in s, failed requests, seconds) of `requests` requests from `clients` threads."""
    import httpx

    payloads = {path: path.read_bytes() for path in pool}
    latencies, failures, lock = [], [], threading.Lock()
    counter = iter(range(requests))

    def client_loop():
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                chosen = [pool[(index * per_request + k) % len(pool)] for k in range(per_request)]
                files = [("files", (path.name, payloads[path], "image/png")) for path in chosen]
                started = time.perf_counter()
                try:
                    answer = client.post("/predict", files=files)
                    seconds = time.perf_counter() - started
                    ok = answer.status_code == 200 and all(
                        matches(item, rows[path]) for item, path in zip(answer.json()["results"], chosen)
                    )
                    reason = None if ok else f"{answer.status_code}: {answer.text[:200]}"
                except httpx.HTTPError as error:
                    seconds, reason = time.perf_counter() - started, f"{type(error).__name__}: {error}"
                with lock:
                    latencies.append(seconds)
                    if reason:
                        failures.append(reason)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as threads:
        for future in [threads.submit(client_loop) for _ in range(clients)]:
            future.result()
    return latencies, failures, time.perf_counter() - started


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.requests = 200
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_serve_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        import logging

        import numpy as np

        from autoencoder import cli

        cli.setup_logging(False)
        logging.getLogger().setLevel(logging.WARNING)
        cli.import_tensorflow()  # for the in-process reference; its start-up noise hidden
        started = time.perf_counter()
        if args.path:
            folder, results = Path(args.path), Path(args.results_dir or "results")
            images = Path(args.images) if args.images else None
            if images is None:
                raise SystemExit("error: --images is required with -p (the files to send)")
            described = f"{folder}"
        else:
            folder, results, images = train_demo_model(work, args.image_score)
            described = f"{folder} (mvtecCAE, L2, {SIZE} px, 2 epochs, image score {args.image_score or 'finetune.py default'})"
        print(f"model: {described}; setup {time.perf_counter() - started:.0f} s")
        pool = pool_of(images)
        n_images = args.requests * args.images_per_request
        copies = linked_copies(work, pool, n_images)
        predict_rate, rows = reference(work, folder, results, args.result, copies, args.batch)

        port = free_port()
        service = start_service(args, folder, results, port, work / "serve.log")
        try:
            load_test(port, pool, rows, WARMUP_REQUESTS, args.clients, args.images_per_request)
            memory_start = memory_mib(service.pid)
            latencies, failures, seconds = load_test(port, pool, rows, args.requests, args.clients, args.images_per_request)
            memory_end = memory_mib(service.pid)
            import httpx

            model_stats = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()["model"]
        finally:
            service.terminate()
            service.wait(60)
        serve_rate = n_images / seconds
        p50, p99 = np.percentile(np.asarray(latencies) * 1000.0, [50, 99])
        print(f"service: {args.requests} requests x {args.images_per_request} image(s) from {args.clients} clients on 127.0.0.1 "
              f"(--batch {args.batch}, --max-wait-ms {args.max_wait_ms:g}; {len(pool)} distinct {SIZE} px PNG files)")
        print(f"latency:                       p50 {p50:.1f} ms, p99 {p99:.1f} ms, mean {np.mean(latencies) * 1000:.1f} ms")
        print(f"service:                       {serve_rate:8.1f} images/s ({n_images} images in {seconds:.1f} s; "
              f"model batches: mean {model_stats['mean_batch']}, largest {model_stats['largest_batch']})")
        print(f"predict.py's code, in process: {predict_rate:8.1f} images/s (streaming loop on the same {n_images} images, best of 2)")
        print(f"ratio service / in-process:    {serve_rate / predict_rate:.2f}x")
        print(f"failed requests:               {len(failures)} of {args.requests} (errors, non-200 or answers differing from predict.py)")
        for reason in failures[:5]:
            print(f"    {reason}")
        print(f"service RSS after warm-up:     peak (VmHWM) {memory_start['VmHWM']:.0f} MiB, now (VmRSS) {memory_start['VmRSS']:.0f} MiB")
        print(f"service RSS at the end:        peak (VmHWM) {memory_end['VmHWM']:.0f} MiB, now (VmRSS) {memory_end['VmRSS']:.0f} MiB "
              f"({memory_end['VmHWM'] / memory_start['VmHWM']:.2f}x the peak after warm-up)")
        return 1 if failures else 0
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
