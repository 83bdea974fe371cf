"""serve.py: one finetuned model behind an HTTP service an inspection line can call.

Layers (each module knows only the ones below it)::

    app.py        HTTP (FastAPI): POST /predict, GET /health, GET /model; body and image-count limits,
                  content types, names and flags checked; the log (a summary line every --log-every
                  seconds, every error at once)
    backends.py   the Backend interface (describe, status, predict, close) and ToolkitBackend: the
                  model loaded as predict.py loads it, results made as predict.py makes its rows
    uploads.py    uploaded bytes -> the model input, exactly as predict.py reads a file
    batching.py   the model worker: dynamic batching of the images of concurrent requests
    config.py     the flags, checked before TensorFlow is imported

A request's way through it:

1. The event loop reads the body (413 past ``--max-body-mb`` before it is read entirely, 413 past
   ``--max-images`` files) and hands the uploads to the backend in a worker thread.
2. The backend decodes them in its decode pool (``--workers`` threads: through a private temporary
   file and predict.py's reader, uploads.py), then puts each decoded image on the model queue.
3. One model worker thread owns the detector: it takes up to ``--batch`` images, waiting at most
   ``--max-wait-ms`` after the first for more, runs ``detector.score`` + ``detector.decide`` once on
   the batch and resolves each image's future (batching.py). Images of several requests share a
   batch; more than ``--max-queue`` waiting images: 503.
4. Back in the request's thread, each image's verdict is made at its original size by the
   function predict.py's rows use (``predict.verdict.verdict_of``): mask, area, bounding box, and
   with ``?mask=true`` the mask as a PNG.

Bad images: every image gets an item; an unreadable one carries predict.py's error message in
``error`` (with the upload's name where predict.py names the file) and the request still answers
200 with the other images' verdicts (as predict.py writes a row with the error and goes on). Only
when no image of the request could be read is the answer 422, its ``detail`` the error (for one
image, exactly predict.py's message).
"""

from processing.workflow.serve.config import ServeConfig  # noqa: F401


def serve(config: ServeConfig) -> None:
    """Load the model, then answer HTTP requests on config.host:config.port until interrupted."""
    import logging

    import uvicorn

    from autoencoder.image_size import ImageSize
    from processing.workflow.serve.app import Limits, create_app
    from processing.workflow.serve.backends import load_backend
    from processing.workflow.serve.protocol import guarded_protocol

    logger = logging.getLogger(__name__)
    config.validate()
    backend = load_backend(config)
    # python-multipart logs every malformed body it sees; app.py answers and logs those requests itself.
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    try:
        app = create_app(backend, Limits.of(config), on_shutdown=backend.close)
        described = backend.describe()
        logger.info(
            "serving %s (%s, %s, %s px) on http://%s:%d: POST /predict, GET /health, GET /model",
            described.get("export", described["model_folder"]), described["result"], described.get("architecture", described.get("format")),
            ImageSize.of(described["image_size"]), config.host, config.port,
        )
        # log_config=None keeps this process's logging; the per-request access log is off (app.py logs a summary).
        # Idle and half-sent requests are closed after --read-timeout, connections beyond --max-connections at once (protocol.py).
        uvicorn.run(app, host=config.host, port=config.port, log_config=None, access_log=False, server_header=False,
                    http=guarded_protocol(config.read_timeout_s, config.max_connections))
    finally:
        backend.close()  # when the server did not start (uvicorn.run exits on a port taken meanwhile)
