"""Serve one finetuned model over HTTP: POST images, get each one's score, verdict, defect area and box.

Examples:
    python serve.py -p saved_models/brick/mvtecCAE/ssim/<timestamp>                  # http://127.0.0.1:8000
    python serve.py -p <model folder> -r ssim_float64 --port 8080 --batch 32 --max-wait-ms 10
    curl -F files=@img_001.png -F files=@img_002.png http://127.0.0.1:8000/predict
    curl --data-binary @img_001.png -H 'Content-Type: image/png' 'http://127.0.0.1:8000/predict?name=img_001.png&mask=true'

The numbers are predict.py's for the same file (docs/predict.md, "Serve"). Concurrent requests are
scored together in batches of up to --batch images by one model worker.
"""

from __future__ import annotations

import argparse

from autoencoder import cli


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (docs/cli.md is generated from it: scripts/make_cli_docs.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-p", "--path", required=True, help="model folder written by train.py (or its .keras file), or an export "
            "written by export.py (a SavedModel folder, a .tflite or .onnx file with its export_info.json), served through its runner")
    parser.add_argument("-r", "--result", default=None, metavar="NAME", help="finetuning result to apply, e.g. ssim_float64 "
            "(default: the model's only one; required when it has several)")
    parser.add_argument("--results-dir", default="results", help="where finetuning results are read")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("-b", "--batch", type=int, default=16, help="images scored together by the model worker, at most")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="how long the model worker waits for more images once it has "
            "one (0: score what is waiting at once)")
    parser.add_argument("--max-body-mb", type=float, default=32.0, help="largest request body in MiB; larger: 413")
    parser.add_argument("--max-images", type=int, default=64, help="most images in one request; more: 413")
    parser.add_argument("--max-pixels", type=int, default=36_000_000, help="most pixels of one image (read from its header before "
            "decoding); more: that image's error")
    parser.add_argument("--max-queue", type=int, default=1024, help="most images waiting for the model; more: 503 (retry later)")
    parser.add_argument("--workers", type=int, default=None, help="threads decoding uploads (default: one per CPU)")
    parser.add_argument("--log-every", type=float, default=60.0, metavar="SECONDS", help="log a summary of the requests this often "
            "(errors are logged at once)")
    parser.add_argument("--read-timeout", type=float, default=15.0, metavar="SECONDS", help="a request's headers, and each part of "
            "its body, must arrive within this; a slower or idle connection is closed")
    parser.add_argument("--max-connections", type=int, default=512, help="most open connections; a new one beyond is closed at once "
            "(at most the open-file limit, ulimit -n, less 64)")
    cli.add_verbose_flag(parser)
    return parser


def main(argv: list[str] | None = None):
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    from processing.workflow.serve import ServeConfig

    config = ServeConfig(
        path=args.path,
        result=args.result,
        results_root=args.results_dir,
        host=args.host,
        port=args.port,
        batch_size=args.batch,
        max_wait_ms=args.max_wait_ms,
        max_body_mb=args.max_body_mb,
        max_images=args.max_images,
        max_pixels=args.max_pixels,
        max_queue=args.max_queue,
        workers=args.workers,
        log_every_s=args.log_every,
        read_timeout_s=args.read_timeout,
        max_connections=args.max_connections,
    )
    config.validate()  # bad flags, a wrong model path, a port in use: one line before TensorFlow is loaded
    cli.import_tensorflow(args.verbose)
    from processing.workflow.serve import serve

    serve(config)


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
