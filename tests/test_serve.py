"""serve.py: /predict answers what predict.py writes for the same files (scores, verdicts, areas,
boxes, masks, error messages), limits (413), garbage and hostile requests, and concurrent requests
batched through the model worker."""

from __future__ import annotations

import asyncio
import base64
import csv
import json
import logging
import re
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

import predict as predict_script
import serve as serve_script
from autoencoder import cli
from processing.workflow.predict import PREDICTIONS_FILE
from processing.workflow.serve import ServeConfig
from processing.workflow.serve.app import Limits, create_app
from processing.workflow.serve.backends import ToolkitBackend
from processing.workflow.serve.batching import Batcher, QueueFull

SIZE = 32
MAX_IMAGES = 8
MAX_BODY_MB = 1.0


@pytest.fixture(scope="module")
def work(finetuned_copy):
    return finetuned_copy[0]  # the dataset (tiles/), the model (models/) and its results (results/)


@pytest.fixture(scope="module")
def model(finetuned_copy):
    return finetuned_copy[1]  # min_area 5 and the median test score as threshold: masks and boxes occur


@pytest.fixture(scope="module")
def images(work) -> list[Path]:
    """The test images, other formats and sizes, and a corrupt file."""
    root = work / "new"
    shutil.copytree(work / "tiles" / "test", root / "line1")
    rng = np.random.default_rng(0)
    cv2.imwrite(str(root / "rgba16.png"), (rng.random((50, 70, 4)) * 65535).astype(np.uint16))
    cv2.imwrite(str(root / "small.jpg"), (rng.random((20, 17, 3)) * 255).astype(np.uint8))
    cv2.imwrite(str(root / "gray.bmp"), (rng.random((64, 48)) * 255).astype(np.uint8))
    (root / "broken.png").write_bytes(b"this is not a png")
    return sorted(path for path in root.rglob("*") if path.is_file())


@pytest.fixture(scope="module")
def predicted(model, work, images) -> dict[str, dict]:
    """predict.py's rows (with --masks) by path."""
    out = work / "predicted"
    argv = ["-p", str(model), "-i", str(work / "new"), "-o", str(out), "--results-dir", str(work / "results"), "--masks", "-b", "4"]
    assert cli.run(predict_script.main, argv) == 0
    with open(out / PREDICTIONS_FILE, newline="") as handle:
        rows = {row["path"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {str(path) for path in images}
    return rows


@pytest.fixture(scope="module")
def config(model, work) -> ServeConfig:
    # --batch as predict.py's -b above: both pad every batch to it, so the forward passes match to the last bit.
    return ServeConfig(path=str(model), results_root=str(work / "results"), batch_size=4, max_wait_ms=50.0,
                       max_body_mb=MAX_BODY_MB, max_images=MAX_IMAGES, workers=2)


@pytest.fixture(scope="module")
def backend(config):
    backend = ToolkitBackend.load(config)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def client(backend, config):
    with TestClient(create_app(backend, Limits.of(config))) as client:
        yield client


def post_files(client, paths: list[Path], names: list[str] | None = None, params: dict | None = None):
    names = names or [str(path) for path in paths]
    files = [("files", (name, path.read_bytes(), "application/octet-stream")) for name, path in zip(names, paths)]
    return client.post("/predict", files=files, params=params or {})


def assert_item_is_row(item: dict, row: dict) -> None:
    """A /predict item carries the numbers of predict.py's row for the same file."""
    assert item["error"] is None and row["error"] == ""
    assert item["score"] == pytest.approx(float(row["score"]), rel=1e-9, abs=1e-12)
    assert int(item["defective"]) == int(row["defective"])
    assert item["threshold"] == float(row["threshold"]) and item["min_area"] == int(row["min_area"])
    assert (item["width"], item["height"]) == (int(row["width"]), int(row["height"]))
    assert item["defect_area_px"] == int(row["defect_area_px"])
    box = None if row["bbox_x0"] == "" else {key: int(row[f"bbox_{key}"]) for key in ("x0", "y0", "x1", "y1")}
    assert item["bbox"] == box


def test_health_and_model(client, model, config):
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["ready"] is True
    described = client.get("/model").json()
    assert described["model_folder"] == str(Path(model).resolve())
    assert (described["architecture"], described["image_size"], described["color_mode"]) == ("mvtecCAE", SIZE, "grayscale")
    assert described["result"] == "l2_float64"
    assert described["decision"]["min_area"] == 5 and described["decision"]["detector"] == "segmentation"
    assert described["limits"]["max_images"] == MAX_IMAGES


def test_predict_answers_what_predict_py_writes(client, images, predicted):
    good = [path for path in images if path.name != "broken.png"]
    verdicts = set()
    for start in range(0, len(good), MAX_IMAGES):
        chunk = good[start:start + MAX_IMAGES]
        answer = post_files(client, chunk)
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert [item["name"] for item in results] == [str(path) for path in chunk]
        for item in results:
            assert_item_is_row(item, predicted[item["name"]])
            verdicts.add(item["defective"])
    assert verdicts == {True, False}


def test_mask_png_is_the_mask_predict_py_writes(client, images, predicted, work):
    chunk = [path for path in images if path.name != "broken.png"][:MAX_IMAGES]
    answer = post_files(client, chunk, params={"mask": "true"})
    defects = 0
    for item in answer.json()["results"]:
        mask = cv2.imdecode(np.frombuffer(base64.b64decode(item["mask"]), np.uint8), cv2.IMREAD_UNCHANGED)
        expected = cv2.imread(str(work / "predicted" / predicted[item["name"]]["mask"]), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(mask, expected)
        defects += int(mask.any())
    assert defects > 0
    assert "mask" not in post_files(client, chunk[:1]).json()["results"][0]


def test_a_raw_image_body_gets_the_same_answer(client, images, predicted):
    path = next(path for path in images if path.suffix == ".jpg")
    answer = client.post("/predict", content=path.read_bytes(), headers={"Content-Type": "image/jpeg"}, params={"name": str(path)})
    assert answer.status_code == 200
    assert_item_is_row(answer.json()["results"][0], predicted[str(path)])


def test_what_clients_send_first_is_understood(client, images, predicted):
    """`curl -F file=@x.png` (any field name) and `curl --data-binary @x.png` (the body, with curl's
    default application/x-www-form-urlencoded or no content type) answer as predict.py (issue 27)."""
    path = next(path for path in images if path.suffix == ".png" and path.name != "broken.png")
    for field in ("file", "image", "upload"):
        answer = client.post("/predict", files=[(field, (str(path), path.read_bytes(), "image/png"))])
        assert answer.status_code == 200, answer.text
        assert_item_is_row(answer.json()["results"][0], predicted[str(path)])
    for content_type in ("application/x-www-form-urlencoded", "application/octet-stream", None):
        headers = {} if content_type is None else {"Content-Type": content_type}
        answer = client.post("/predict", content=path.read_bytes(), headers=headers, params={"name": str(path)})
        assert answer.status_code == 200, (content_type, answer.text)
        assert_item_is_row(answer.json()["results"][0], predicted[str(path)])
    typo = client.post("/predict", content=b'--zz\r\nContent-Disposition: form-data; name="file"\r\n\r\nx.png\r\n--zz--\r\n',
                       headers={"Content-Type": "multipart/form-data; boundary=zz"})  # curl -F file=x.png, without the @
    assert typo.status_code == 422 and "holds text" in typo.json()["detail"] and "-F files=@image.png" in typo.json()["detail"]


def test_a_corrupt_image_gets_predict_py_s_message(client, images, predicted):
    broken = next(path for path in images if path.name == "broken.png")
    message = predicted[str(broken)]["error"]
    assert message and str(broken) in message
    alone = post_files(client, [broken])  # named as predict.py names it: the same message, byte for byte
    assert alone.status_code == 422 and alone.json()["detail"] == message
    raw = client.post("/predict", content=broken.read_bytes(), headers={"Content-Type": "image/png"}, params={"name": "line4/x.png"})
    assert raw.status_code == 422 and raw.json()["detail"] == message.replace(str(broken), "line4/x.png")
    # One bad file among good ones: 200, the bad one carries its error, the others their verdicts.
    good = next(path for path in images if path.suffix == ".bmp")
    mixed = post_files(client, [good, broken])
    assert mixed.status_code == 200
    first, second = mixed.json()["results"]
    assert_item_is_row(first, predicted[str(good)])
    assert second["error"] == message and second["score"] is None and second["bbox"] is None


def test_limits_413(client, images):
    too_big = b"\0" * (int(MAX_BODY_MB * 1024 * 1024) + 1)
    answer = client.post("/predict", content=too_big, headers={"Content-Type": "image/png"})
    assert answer.status_code == 413 and "--max-body-mb" in answer.json()["detail"]
    many = post_files(client, [images[0]] * (MAX_IMAGES + 1))
    assert many.status_code == 413 and "--max-images" in many.json()["detail"]


def test_a_chunked_body_is_refused_before_it_is_read_entirely(backend, config):
    """No Content-Length: the body is counted as it arrives and refused at the first chunk past the limit."""
    app = create_app(backend, Limits.of(config))
    chunk, reads, sent = 64 * 1024, [], []

    async def receive():
        reads.append(chunk)
        return {"type": "http.request", "body": b"\0" * chunk, "more_body": len(reads) < 1000}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http", "path": "/predict",
             "raw_path": b"/predict", "root_path": "", "query_string": b"", "headers": [(b"content-type", b"image/png")],
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000)}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert sum(reads) <= MAX_BODY_MB * 1024 * 1024 + chunk  # 17 of the 1000 chunks


def test_garbage_and_hostile_requests(client, images, work, caplog):
    assert client.post("/predict", content=b"x=1", headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 415
    assert client.post("/predict", content=b"garbage").status_code == 415  # no content type
    bad_multipart = client.post("/predict", content=b"\x00garbage--zz", headers={"Content-Type": "multipart/form-data; boundary=zz"})
    assert bad_multipart.status_code == 400
    assert client.post("/predict", content=b"--zz--\r\n", headers={"Content-Type": "multipart/form-data; boundary=zz"}).status_code == 422
    gif = client.post("/predict", content=b"GIF89a not one we read", headers={"Content-Type": "application/octet-stream"})
    assert gif.status_code == 415
    text_field = client.post("/predict", data={"files": "text"}, files=[("files", ("a.png", images[0].read_bytes()))])
    assert text_field.status_code == 422 and "holds text" in text_field.json()["detail"]
    assert post_files(client, images[:1], params={"mask": "maybe"}).status_code == 422
    assert client.get("/nothing%0a12:00:00 INFO forged line").status_code == 404  # logged as one line
    assert client.get("/predict").status_code == 405
    # A hostile file name is a label only: control characters replaced, cut short, never a path.
    hostile = "../../serve_probe\r\nX-Injected: 1\x00" + "a" * 500 + ".png"
    good = next(path for path in images if path.suffix == ".bmp")
    item = post_files(client, [good], names=[hostile]).json()["results"][0]
    assert item["error"] is None and item["score"] is not None
    assert not re.search(r"[\x00-\x1f]", item["name"]) and len(item["name"]) <= 255 and item["name"].startswith("../../serve_probe")
    assert not list(work.parent.glob("serve_probe*")) and not list(Path("/tmp").glob("serve_probe*"))
    refusals = [record.getMessage() for record in caplog.records if record.name.endswith("serve.app")]
    assert len(refusals) >= 9 and not any("\n" in line or "\r" in line for line in refusals)


def test_concurrent_requests_are_batched_and_answered_right(client, images, predicted, backend):
    good = [path for path in images if path.name != "broken.png"]
    before = backend.batcher.stats()["batches"]

    def one(index: int):
        path = good[index % len(good)]
        return path, client.post("/predict", content=path.read_bytes(), headers={"Content-Type": "image/png"}, params={"name": str(path)})

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(one, range(20)))
    for path, answer in answers:
        assert answer.status_code == 200
        assert_item_is_row(answer.json()["results"][0], predicted[str(path)])
    stats = client.get("/health").json()["model"]
    assert stats["batches"] - before < 20 and stats["largest_batch"] > 1, stats


def test_the_batcher_fills_batches_refuses_a_full_queue_and_fails_a_broken_batch():
    gate, seen = threading.Event(), []

    def run_batch(batch):
        gate.wait(10)
        seen.append(len(batch))
        if (batch < 0).any():
            raise RuntimeError("broken batch")
        return list(batch[:, 0] * 2)

    batcher = Batcher(run_batch, max_batch=4, max_wait_s=0.05, max_queue=6)
    try:
        first = batcher.submit([np.array([1.0])])  # taken by the worker, which waits on the gate
        while batcher.stats()["waiting"]:
            time.sleep(0.001)
        time.sleep(0.2)  # past the worker's wait for more: it holds a batch of one, blocked on the gate
        rest = batcher.submit([np.array([float(value)]) for value in range(2, 8)])
        with pytest.raises(QueueFull):
            batcher.submit([np.array([9.0])])
        gate.set()
        assert [future.result(10) for future in first + rest] == [2.0 * value for value in range(1, 8)]
        assert max(seen) == 4
        with pytest.raises(RuntimeError, match="broken batch"):
            batcher.submit([np.array([-1.0])])[0].result(10)
        assert batcher.submit([np.array([3.0])])[0].result(10) == 6.0  # the worker goes on
    finally:
        gate.set()
        batcher.close()
    with pytest.raises(RuntimeError, match="stopped"):
        batcher.submit([np.array([1.0])])


def test_serve_py_checks_its_flags_before_tensorflow(model, capsys):
    assert cli.run(serve_script.main, ["-p", "/nonexistent/model"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: -p/--path /nonexistent/model not found")
    assert cli.run(serve_script.main, ["-p", str(model), "--max-images", "0"]) == 2
    assert "--max-images 0" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.run(serve_script.main, ["-p", str(model), "--port", str(port)]) == 2
    assert f"--port {port}: cannot listen there" in capsys.readouterr().err


def test_an_export_is_served_through_its_runner(model, work, images, predicted, tmp_path):
    """serve.py -p EXPORT: the same answers (scores within 1e-4, verdicts and boxes equal) from the
    exported SavedModel and the runner beside it."""
    import export as export_script
    from processing.workflow.serve.backends import ExportBackend, load_backend

    out = tmp_path / "export"
    export_script.main(["-p", str(model), "--format", "savedmodel", "-o", str(out), "--results-dir", str(work / "results")])
    config = ServeConfig(path=str(out), batch_size=4, max_wait_ms=20.0, max_body_mb=MAX_BODY_MB, max_images=MAX_IMAGES, workers=2)
    config.validate()
    backend = load_backend(config)
    assert isinstance(backend, ExportBackend)
    try:
        with TestClient(create_app(backend, Limits.of(config))) as client:
            described = client.get("/model").json()
            assert described["backend"] == "export" and described["format"] == "savedmodel" and described["result"] == "l2_float64"
            chunk = images[:MAX_IMAGES]
            results = post_files(client, chunk).json()["results"]
            for item in results:
                row = predicted[item["name"]]
                if row["error"]:
                    assert item["error"] == row["error"]
                    continue
                assert item["score"] == pytest.approx(float(row["score"]), rel=1e-4)
                assert int(item["defective"]) == int(row["defective"])
                assert item["defect_area_px"] == int(row["defect_area_px"])
    finally:
        backend.close()


# --------------------------------------------------------------------------------------------
# A real server on 127.0.0.1 against idle, half-sent and vanishing clients (bounded, stops by itself)
# --------------------------------------------------------------------------------------------


class RunningServer:
    """uvicorn with serve.py's protocol in a thread, on a free port of 127.0.0.1."""

    def __init__(self, app, read_timeout_s: float, max_connections: int):
        import uvicorn

        from processing.workflow.serve.protocol import guarded_protocol

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, access_log=False, lifespan="off",
                                http=guarded_protocol(read_timeout_s, max_connections))
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)

    def connect(self) -> socket.socket:
        connection = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return connection

    def health(self) -> int:
        with self.connect() as connection:
            connection.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return int(connection.recv(64).split()[1])


def closed_by_server(connection: socket.socket, within_s: float) -> bool:
    """Whether the server closes `connection` (recv gives b'' or a reset) within `within_s`."""
    connection.settimeout(within_s)
    try:
        return connection.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_and_half_sent_connections_are_closed_and_the_server_keeps_answering(backend, config, caplog):
    app = create_app(backend, Limits.of(config))
    caplog.set_level(logging.INFO)
    with RunningServer(app, read_timeout_s=0.5, max_connections=20) as server:
        idle = [server.connect() for _ in range(30)]  # 10 over the cap: closed at once
        for connection in idle[:25]:
            try:
                connection.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            except OSError:  # one of those closed over the cap
                pass
        started = time.monotonic()
        assert all(closed_by_server(connection, 3.0) for connection in idle)
        assert time.monotonic() - started < 3.0
        for connection in idle:
            connection.close()
        assert server.health() == 200

        # A byte every 0.2 s does not extend the headers' deadline (slowloris).
        with server.connect() as slow:
            started = time.monotonic()
            closed = False
            for _ in range(30):
                try:
                    slow.sendall(b"X")
                except OSError:
                    closed = True
                    break
                if closed_by_server(slow, 0.2):
                    closed = True
                    break
            assert closed and time.monotonic() - started < 2.0

        # A body that stops half way is closed too, and the endpoint logs one line, no traceback.
        with server.connect() as half_body:
            half_body.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\n" + b"x" * 100)
            assert closed_by_server(half_body, 3.0)
        # A client that leaves mid-body on its own.
        for _ in range(5):
            with server.connect() as leaving:
                leaving.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\n" + b"x" * 10)
        time.sleep(0.5)
        assert server.health() == 200
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    assert any("disconnected before sending its whole body" in r.getMessage() for r in caplog.records)
    assert any("closed" in r.getMessage() and "--read-timeout" in r.getMessage() for r in caplog.records)


def test_serve_flags_for_connections_are_checked(model):
    with pytest.raises(ValueError, match="--read-timeout 0: expected a number from 0.01 to 3600"):
        ServeConfig(path=str(model), read_timeout_s=0).validate()
    with pytest.raises(ValueError, match="--max-connections 10000000: this process may open"):
        ServeConfig(path=str(model), max_connections=10_000_000).validate()


def test_upload_folders_of_killed_servers_are_removed_at_start(tmp_path, caplog):
    """A SIGKILLed serve.py cannot remove its clients' uploads; the next one does and says so (issue 30, case 15)."""
    import os
    import subprocess
    import sys

    from processing.workflow.serve.uploads import UPLOAD_PREFIX, remove_stale_upload_folders

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f"{UPLOAD_PREFIX}{dead}-abc"
    stale.mkdir()
    (stale / "upload-1.png").write_bytes(b"a client's image")
    alive = tmp_path / f"{UPLOAD_PREFIX}{os.getpid()}-def"
    alive.mkdir()
    unrelated = tmp_path / "serve-uploads-notapid"
    unrelated.mkdir()
    caplog.set_level(logging.WARNING)
    assert remove_stale_upload_folders(tmp_path) == [stale]
    assert not stale.exists() and alive.is_dir() and unrelated.is_dir()
    assert any("removed 1 upload folder(s) left by serve.py processes that no longer run" in r.getMessage() for r in caplog.records)


def test_serve_py_refuses_a_wrong_result_or_export_before_tensorflow(model, work, tmp_path):
    """Each refusal of issue 30 cases 16 and 18 in under a few seconds: no TensorFlow imported."""
    import subprocess
    import sys

    (tmp_path / "lonely.onnx").write_bytes(b"x")
    (tmp_path / "bad.onnx").write_bytes(b"x")
    (tmp_path / "bad.onnx.json").write_text("{not json")
    cases = {
        "-r/--result nope: no such finetuning result": ["-p", str(model), "--results-dir", str(work / "results"), "-r", "nope"],
        "no finetuning result in": ["-p", str(model), "--results-dir", str(tmp_path / "empty")],
        f"-p {tmp_path / 'lonely.onnx'}: an export without its lonely.onnx.json": ["-p", str(tmp_path / "lonely.onnx")],
        f"{tmp_path / 'bad.onnx.json'}: not valid JSON": ["-p", str(tmp_path / "bad.onnx")],
    }
    script = ("import json, sys; sys.path.insert(0, {root!r}); import serve; from autoencoder import cli; "
              "code = cli.run(serve.main, json.loads(sys.argv[1])); print(json.dumps([code, 'tensorflow' in sys.modules]))")
    root = str(Path(__file__).resolve().parents[1])
    for expected, argv in cases.items():
        run = subprocess.run([sys.executable, "-c", script.format(root=root), json.dumps(argv)], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path)
        code, imported = json.loads(run.stdout.strip().splitlines()[-1])
        assert code == 2 and expected in run.stderr and not imported, (expected, run.stderr)


def test_a_sigkilled_server_leaves_no_uploads_after_a_restart(model, work, tmp_path):
    """serve.py killed with SIGKILL, then started again: the second one removes the first one's
    upload folder and says so; it answers /health; both stop by themselves (bounded)."""
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    temp = tmp_path / "tmp"
    temp.mkdir()
    env = dict(os.environ, TMPDIR=str(temp))

    def start() -> tuple[subprocess.Popen, int]:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        process = subprocess.Popen([sys.executable, "serve.py", "-p", str(model), "--results-dir", str(work / "results"),
                                    "--port", str(port)], cwd=Path(serve_script.__file__).parent, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return process, port
            except OSError:
                time.sleep(0.3)
            assert process.poll() is None, process.stdout.read()
        process.kill()
        raise AssertionError("serve.py did not answer /health within 120 s")

    first, _ = start()
    left = list(temp.glob(f"serve-uploads-{first.pid}-*"))
    assert len(left) == 1
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert left[0].is_dir()  # a killed server cannot clean up
    second, _ = start()
    try:
        assert not left[0].exists()
    finally:
        second.send_signal(signal.SIGTERM)
        output = second.communicate(timeout=60)[0]
    assert "removed 1 upload folder(s) left by serve.py processes that no longer run" in output
    assert not list(temp.glob("serve-uploads-*"))  # the second one removed its own on SIGTERM
