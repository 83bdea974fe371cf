"""predict.py on new, unlabeled images: predictions.csv, masks and overlays at the original size,
report.html, predict_settings.json, --resume/--overwrite/--strict, and bad input (one line)."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import cv2
import numpy as np
import pytest

import finetune
import predict as predict_script
from autoencoder import bundle, cli
from autoencoder.progress import ProgressBar
from processing.data.images import load_image
from processing.workflow.predict import CSV_COLUMNS, PREDICTIONS_FILE, REPORT_FILE, SETTINGS_FILE, csv_io
from processing.workflow.predict.settings import output_stem
from processing.workflow.results import ResultsTree, load_detector

SIZE = 32


@pytest.fixture(scope="module")
def work(finetuned_copy):
    """Its tiles/ (the dataset), models/ and results/ (tests/conftest.py)."""
    return finetuned_copy[0]


@pytest.fixture(scope="module")
def model(finetuned_copy):
    """A one-epoch model with min_area 5 and the median test score as threshold: both verdicts occur."""
    return finetuned_copy[1]


@pytest.fixture(scope="module")
def images(work) -> Path:
    """New images: the test images in nested folders, other formats and sizes, and a corrupt file."""
    root = work / "new"
    shutil.copytree(work / "tiles" / "test", root / "line1")
    rng = np.random.default_rng(0)
    extra = root / "line2" / "deeper"
    extra.mkdir(parents=True)
    cv2.imwrite(str(extra / "rgba16.png"), (rng.random((50, 70, 4)) * 65535).astype(np.uint16))
    cv2.imwrite(str(extra / "small.jpg"), (rng.random((20, 17, 3)) * 255).astype(np.uint8))
    cv2.imwrite(str(extra / "gray.bmp"), (rng.random((64, 48)) * 255).astype(np.uint8))
    cv2.imwrite(str(extra / "rgb.tif"), (rng.random((40, 40, 3)) * 255).astype(np.uint8))
    (extra / "broken.png").write_bytes(b"this is not a png")
    (extra / "notes.txt").write_text("not an image: skipped in folders")
    return root


def run_ok(argv) -> None:
    assert cli.run(predict_script.main, argv) == 0


def run_error(argv, capsys, code: int = 2) -> str:
    """The last stderr line of a predict.py run that fails: exit 2 and "error: ..." for bad input,
    exit 1 and "internal error: ..." (code 1) for anything else."""
    assert cli.run(predict_script.main, argv) == code
    err = re.split(r"[\r\n]", capsys.readouterr().err.strip())[-1]
    assert err.startswith("error: " if code == 2 else "internal error: ")
    return err


def rows_of(out: Path) -> list[dict]:
    with open(out / PREDICTIONS_FILE, newline="") as handle:
        return list(csv.DictReader(handle))


def base_args(model, work, out, *inputs) -> list[str]:
    return ["-p", str(model), "-i", *map(str, inputs), "-o", str(out), "--results-dir", str(work / "results")]


@pytest.fixture(scope="module")
def predicted(model, work, images):
    out = work / "out"
    run_ok([*base_args(model, work, out, images), "--masks", "--overlays", "-b", "4"])
    return out


def test_predictions_csv_scores_every_image_like_the_detector(predicted, model, work, images):
    rows = rows_of(predicted)
    expected = sorted(str(path) for path in images.rglob("*") if path.suffix in (".png", ".jpg", ".bmp", ".tif"))
    assert sorted(row["path"] for row in rows) == expected
    assert list(rows[0]) == CSV_COLUMNS
    broken = [row for row in rows if row["path"].endswith("broken.png")]
    assert len(broken) == 1 and "broken.png" in broken[0]["error"] and broken[0]["score"] == ""
    scored = [row for row in rows if not row["error"]]
    assert len(scored) == len(rows) - 1

    bundle_ = bundle.load_bundle(model)
    _, folder = ResultsTree.of_model(bundle_, str(work / "results")).choose(None)
    detector = load_detector(bundle_, folder)
    batch = np.stack([load_image(row["path"], "grayscale", SIZE) for row in scored])
    scores = detector.score(batch)
    decisions = detector.decide(scores)
    np.testing.assert_allclose([float(row["score"]) for row in scored], scores.image_scores, rtol=1e-9)
    np.testing.assert_array_equal([int(row["defective"]) for row in scored], decisions.defective.astype(int))
    assert {row["threshold"] for row in scored} == {repr(detector.threshold)}
    assert {row["min_area"] for row in scored} == {str(detector.min_area)}
    assert 0 < decisions.defective.sum() < len(scored)


def test_masks_overlays_and_boxes_at_the_original_size(predicted):
    for row in rows_of(predicted):
        if row["error"]:
            assert row["mask"] == row["overlay"] == ""
            continue
        original = cv2.imread(row["path"], cv2.IMREAD_UNCHANGED)
        height, width = original.shape[:2]
        assert (int(row["height"]), int(row["width"])) == (height, width)
        mask = cv2.imread(str(predicted / row["mask"]), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (height, width) and set(np.unique(mask)) <= {0, 255}
        assert int(row["defect_area_px"]) == np.count_nonzero(mask)
        assert bool(mask.any()) == (row["defective"] == "1")
        if mask.any():
            ys, xs = np.nonzero(mask)
            box = [int(row[key]) for key in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")]
            assert box == [xs.min(), ys.min(), xs.max(), ys.max()]
        else:
            assert row["bbox_x0"] == ""
        overlay = cv2.imread(str(predicted / row["overlay"]))
        assert overlay.shape == (height, width, 3)


def test_report_and_settings(predicted, model):
    page = (predicted / REPORT_FILE).read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page
    for target in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert (predicted / unquote(target)).exists(), target  # relative links that resolve offline
    assert 'src="./report_files/scores.png"' in page
    thumbnails = re.findall(r'src="(\./report_files/gallery/[^"]+)"', page)
    rows = [row for row in rows_of(predicted) if not row["error"]]
    overlays = [name for name in thumbnails if not name.endswith("_heatmap.png")]
    assert len(overlays) == len(rows)  # fewer than --gallery 48 images
    assert sorted(thumbnails) == sorted(overlays + [name.replace(".png", "_heatmap.png") for name in overlays])  # a heat map beside each
    # Sorted by score, most suspicious first.
    shown = [float(value) for value in re.findall(r'<span class="score">([^<]+)</span>', page)]
    assert shown == sorted(shown, reverse=True)
    assert "broken.png" in page and "1 failed" not in page  # the failures table names the file
    settings = json.loads((predicted / SETTINGS_FILE).read_text())
    assert settings["model_folder"] == str(model.resolve()) and settings["result"] == "l2_float64"
    assert settings["decision"]["threshold"] > 0 and settings["flags"]["masks"] is True
    assert settings["counts"] == {"images": len(rows) + 1, "defective": sum(r["defective"] == "1" for r in rows),
                                  "good": sum(r["defective"] == "0" for r in rows), "failed": 1}
    assert settings["runs"][-1]["status"] == "complete"
    assert not [path for path in predicted.iterdir() if path.name.startswith(".")], "temporary files left behind"


def test_strict_fails_after_writing_everything(model, work, images, tmp_path, capsys):
    out = tmp_path / "strict"
    err = run_error([*base_args(model, work, out, images), "--strict"], capsys)
    assert "1 of" in err and "failed" in err and "--strict" in err
    assert len(rows_of(out)) == 25 and (out / REPORT_FILE).is_file()


def test_resume_skips_what_is_done_and_drops_a_cut_line(model, work, images, tmp_path, caplog):
    out = tmp_path / "resumed"
    first = images / "line1" / "good"
    run_ok(base_args(model, work, out, first))
    done = rows_of(out)
    assert len(done) == 8
    with open(out / PREDICTIONS_FILE, "a") as handle:  # a run killed while writing a row
        handle.write(f"{images / 'line1' / 'spot' / '000.png'},0.1,1")
    run_ok([*base_args(model, work, out, images), "--resume"])
    rows = rows_of(out)
    assert len(rows) == 25 and len({row["path"] for row in rows}) == 25
    assert rows[:8] == done
    settings = json.loads((out / SETTINGS_FILE).read_text())
    assert [run["n_skipped"] for run in settings["runs"]] == [0, 8]


def test_csv_is_appended_batch_by_batch(model, work, images, tmp_path, monkeypatch):
    out = tmp_path / "streamed"
    seen = []
    original = csv_io.CsvAppender.append

    def spy(appender, rows):
        seen.append(len(rows))
        original(appender, rows)
        assert len(rows_of(out)) == sum(seen)  # on disk after every batch

    monkeypatch.setattr(csv_io.CsvAppender, "append", spy)
    run_ok([*base_args(model, work, out, images), "-b", "5"])
    assert seen == [5, 5, 5, 5, 5]


def test_output_folder_rules(model, work, images, predicted, tmp_path, capsys):
    err = run_error(base_args(model, work, predicted, images), capsys)
    assert str(predicted) in err and "--resume" in err and "--overwrite" in err

    # Another model (a copy elsewhere is another model folder) may not resume these predictions.
    other = tmp_path / "models" / "other"
    shutil.copytree(model, other)
    info = json.loads((other / "info.json").read_text())
    src = work / "results" / info["dataset"]["name"] / "mvtecCAE" / "l2" / model.name
    shutil.copytree(src, work / "results" / info["dataset"]["name"] / "mvtecCAE" / "l2" / "other")
    before = (predicted / PREDICTIONS_FILE).read_bytes()
    err = run_error(["-p", str(other), "-i", str(images), "-o", str(predicted), "--resume", "--results-dir", str(work / "results")], capsys)
    assert "holds predictions of model" in err and str(model.resolve()) in err
    assert (predicted / PREDICTIONS_FILE).read_bytes() == before

    copy = tmp_path / "copy"
    shutil.copytree(predicted, copy)
    (copy / "keep.txt").write_text("not ours")
    run_ok(["-p", str(other), "-i", str(images / "line1" / "good"), "-o", str(copy), "--overwrite", "--results-dir", str(work / "results")])
    assert len(rows_of(copy)) == 8 and not (copy / "masks").exists() and (copy / "keep.txt").is_file()
    assert json.loads((copy / SETTINGS_FILE).read_text())["model_folder"] == str(other.resolve())


def test_bad_inputs_are_one_line(model, work, images, tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    err = run_error(base_args(model, work, tmp_path / "o1", empty), capsys)
    assert str(empty) in err and "no image" in err
    pattern = str(images / "*.gif")
    err = run_error(base_args(model, work, tmp_path / "o1", pattern), capsys)
    assert pattern in err and "matches no" in err
    err = run_error(base_args(model, work, tmp_path / "o1", tmp_path / "missing"), capsys)
    assert "missing" in err and "not found" in err
    assert not (tmp_path / "o1").exists()

    # A glob that matches images works, '**' recursing.
    out = tmp_path / "globbed"
    run_ok(base_args(model, work, out, str(images / "**" / "*.jpg"), str(images / "line1" / "crack" / "*.png")))
    assert len(rows_of(out)) == 5


def test_model_without_or_with_several_results(model, work, images, tmp_path, capsys):
    err = run_error(["-p", str(model), "-i", str(images), "-o", str(tmp_path / "o"), "--results-dir", str(tmp_path / "none")], capsys)
    assert "finetune.py" in err and "no finetuning result" in err
    results = tmp_path / "results"
    shutil.copytree(work / "results", results)
    finetune.main(["-p", str(model), "-m", "ssim", "--results-dir", str(results)])
    err = run_error(["-p", str(model), "-i", str(images), "-o", str(tmp_path / "o"), "--results-dir", str(results)], capsys)
    assert "l2_float64" in err and "ssim_float64" in err and "-r/--result" in err
    argv = ["-p", str(model), "-r", "knn_float64", "-i", str(images), "-o", str(tmp_path / "o"), "--results-dir", str(results)]
    err = run_error(argv, capsys)
    assert "knn_float64" in err and "l2_float64, ssim_float64" in err
    assert not (tmp_path / "o").exists()
    run_ok(["-p", str(model), "-r", "ssim_float64", "-i", str(images / "line1"), "-o", str(tmp_path / "o"), "--results-dir", str(results)])
    assert json.loads((tmp_path / "o" / SETTINGS_FILE).read_text())["result"] == "ssim_float64"


def read_only_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except OSError:
        return folder
    # root writes anyway: use a folder no one may write to
    folder = Path("/sys/kernel")
    try:
        (folder / "probe").touch()
    except OSError:
        return folder
    pytest.skip("no read-only folder available")


def test_read_only_output_folder(model, work, images, tmp_path, capsys):
    folder = read_only_folder(tmp_path)
    err = run_error(base_args(model, work, folder, images), capsys)
    assert str(folder) in err and "not writable" in err
    err = run_error(base_args(model, work, folder / "sub", images), capsys)
    assert "not writable" in err
    assert not (folder / "sub").exists() and not (folder / PREDICTIONS_FILE).exists()


def test_progress_is_a_log_line_off_a_terminal(caplog):
    with caplog.at_level(logging.INFO, logger="autoencoder.progress"):
        with ProgressBar(total=10, desc="predict", unit="img", every_s=0.0, terminal=False) as bar:
            bar.update(4)
            bar.update(6)
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0].startswith("predict: 4/10 img (40%)") and lines[-1].startswith("predict: 10/10 img (100%)")
    assert ProgressBar(total=1, terminal=False).bar.disable  # no bar drawn off a terminal


def test_bad_input_is_reported_before_tensorflow_is_imported(tmp_path):
    import sys

    code = (
        "import sys, predict\n"
        "from autoencoder import cli\n"
        f"code = cli.run(predict.main, ['-p', 'model', '-i', {str(tmp_path / 'missing')!r}, '-o', {str(tmp_path / 'o')!r}])\n"
        "print(code, 'tensorflow' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(predict_script.__file__).parent, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split() == ["2", "False"], done.stdout + done.stderr
    assert "missing" in done.stderr


def test_kde_results_classify_whole_images(model, work, images, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(work / "results", results)
    kde = finetune.main(["-p", str(model), "--detector", "kde", "--results-dir", str(results)])
    out = tmp_path / "kde"
    run_ok(["-p", str(model), "-r", kde.name, "-i", str(images), "-o", str(out), "--masks", "--overlays", "--results-dir", str(results)])
    rows = [row for row in rows_of(out) if not row["error"]]
    assert len(rows) == 24 and all(row["min_area"] == "" and row["defect_area_px"] == "" and row["mask"] == "" for row in rows)
    assert all(row["overlay"] for row in rows) and not (out / "masks").exists()
    settings = json.loads((out / SETTINGS_FILE).read_text())
    assert settings["decision"]["detector"] == "kde"
    assert settings["decision"]["threshold"] == -settings["decision"]["density_threshold"]
    assert 'src="./report_files/scores.png"' in (out / REPORT_FILE).read_text()


def test_an_output_folder_inside_the_inputs_is_not_predicted(model, work, images, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(images / "line1" / "good", data)
    run_ok([*base_args(model, work, data / "predictions", data), "--overlays"])
    run_ok([*base_args(model, work, data / "predictions", data), "--resume"])
    rows = rows_of(data / "predictions")
    assert len(rows) == 8 and not any("predictions" in Path(row["path"]).parent.as_posix() for row in rows)
    # An earlier run's output folder inside the inputs, predicting into another -o: its masks,
    # overlays and report images are not inputs either (issue 30, case 14).
    run_ok([*base_args(model, work, tmp_path / "second", data), "--overlays"])
    rows = rows_of(tmp_path / "second")
    assert len(rows) == 8 and not any("predictions" in Path(row["path"]).parent.as_posix() for row in rows)


# --------------------------------------------------------------------------------------------
# report.html with hostile file names, opened in a real browser
# --------------------------------------------------------------------------------------------

HOSTILE_NAMES = [
    "x\" onerror=\"document.title='PWNED';",
    "<img src=x onerror=document.title='PWNED'>",
    "javascript:document.title='PWNED'",
    "x' onerror='document.title=`PWNED`'",
    "a&amp;b 'q' & <b>bold",
]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def dump_dom(page: Path, profile: Path) -> str:
    """The page's DOM after headless Chromium loaded it (and ran whatever it would run)."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"]
    done = subprocess.run([chromium(), *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "</html>" in done.stdout, done.stderr[-2000:]
    return done.stdout


class _Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.attributes: list[tuple[str, str, str]] = []  # (tag, name, value)
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.attributes += [(tag, name, value or "") for name, value in attrs]

    def handle_data(self, data):
        self.text.append(data)


@pytest.mark.skipif(chromium() is None, reason="chromium not installed (.ci/run installs it)")
def test_hostile_file_names_run_nothing_in_the_report(model, work, tmp_path):
    folder = tmp_path / "hostile"
    folder.mkdir()
    source = next((work / "tiles" / "test" / "good").glob("*.png"))
    for name in HOSTILE_NAMES:
        shutil.copy(source, folder / f"{name}.png")
    out = tmp_path / "out"
    run_ok([*base_args(model, work, out, folder), "--overlays", "--heatmaps"])
    assert sorted(path.name for path in (out / "heatmaps").iterdir()) == sorted(
        f"{output_stem(folder / f'{name}.png')}_heatmap.png" for name in HOSTILE_NAMES)
    page = (out / REPORT_FILE).read_text()
    dom = dump_dom(out / REPORT_FILE, tmp_path / "profile")
    title = re.search(r"<title>(.*?)</title>", page).group(1)
    assert re.search(r"<title>(.*?)</title>", dom).group(1) == title and "PWNED" not in title
    parsed = _Elements()
    parsed.feed(dom)
    assert not [a for a in parsed.attributes if a[1].startswith("on")], "an event handler attribute reached the DOM"
    links = [value for _, name, value in parsed.attributes if name in ("src", "href")]
    assert links and all(link.startswith(("./", "../")) for link in links), links
    for link in links:
        assert (out / unquote(link)).is_file(), link  # every link names the file it should
    text = "".join(parsed.text)
    for name in HOSTILE_NAMES:
        assert f"{name}.png" in text  # shown as its name
    heat_maps = [value for _, key, value in parsed.attributes if key == "alt" and value.startswith("heat map of ")]
    assert sorted(heat_maps) == sorted(f"heat map of {folder / name}.png" for name in HOSTILE_NAMES)  # beside each overlay


def test_truncated_and_rotated_jpegs(model, work, tmp_path):
    """A JPEG cut in half is an error row (libjpeg alone would fill it with grey); an EXIF-rotated
    one is scored, sized, masked and boxed in the orientation a viewer shows."""
    from PIL import Image

    folder = tmp_path / "jpegs"
    folder.mkdir()
    stored = cv2.imread(str(next((work / "tiles" / "test" / "crack").glob("*.png"))), cv2.IMREAD_COLOR)[:, :20, ::-1]  # 32 x 20
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: 20 x 32
    Image.fromarray(np.ascontiguousarray(stored)).save(folder / "rotated.jpg", quality=95, exif=exif.tobytes())
    whole = (folder / "rotated.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "out"
    run_ok([*base_args(model, work, out, folder), "--masks", "--overlays"])
    rows = {Path(row["path"]).name: row for row in rows_of(out)}
    assert "truncated JPEG" in rows["cut.jpg"]["error"] and rows["cut.jpg"]["score"] == ""
    rotated = rows["rotated.jpg"]
    assert (rotated["width"], rotated["height"]) == ("32", "20") and rotated["error"] == ""
    assert cv2.imread(str(out / rotated["mask"]), cv2.IMREAD_UNCHANGED).shape == (20, 32)
    assert cv2.imread(str(out / rotated["overlay"])).shape == (20, 32, 3)


# --------------------------------------------------------------------------------------------
# One run per output folder, nothing left behind by a failed run, paths compared resolved
# --------------------------------------------------------------------------------------------


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True).stdout)


def test_a_locked_output_folder_is_refused_and_a_dead_runs_lock_taken_over(model, work, images, tmp_path, capsys, caplog):
    from autoencoder.folders import LOCK_FILE, FolderLock

    out = tmp_path / "locked"
    out.mkdir()
    with FolderLock(out, "predict.py run"):  # a live run holds it
        err = run_error(base_args(model, work, out, images / "line1" / "good"), capsys)
        assert err.startswith(f"error: {out} is in use by another predict.py run (pid {os.getpid()}")
        assert [p.name for p in out.iterdir()] == [LOCK_FILE]
    (out / LOCK_FILE).write_text(json.dumps({"pid": dead_pid(), "host": "h", "started": "then"}))  # left by a killed run
    with caplog.at_level(logging.WARNING):
        run_ok(base_args(model, work, out, images / "line1" / "good"))
    assert "took over the lock" in caplog.text and not (out / LOCK_FILE).exists() and len(rows_of(out)) == 8


def test_two_runs_started_at_once_on_one_folder(model, work, images, tmp_path):
    """One writes the predictions, the other refuses in one line: one header, every image once."""
    out = tmp_path / "raced"
    argv = [sys.executable, "predict.py", *base_args(model, work, out, images / "line1")]
    root = Path(predict_script.__file__).parent
    runs = [subprocess.Popen(argv, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    done = [(run.wait(timeout=300), run.stderr.read().strip().splitlines()) for run in runs]
    assert sorted(code for code, _ in done) == [0, 2], done
    (loser,) = [lines[-1] for code, lines in done if code == 2]
    assert loser.startswith("error: ") and ("in use by another predict.py run" in loser or "already holds predictions" in loser)
    text = (out / PREDICTIONS_FILE).read_text()
    assert text.count("path,score") == 1
    paths = [row["path"] for row in rows_of(out)]
    assert len(paths) == len(set(paths)) == 20


def test_a_run_that_fails_before_its_first_row_leaves_nothing(model, work, images, tmp_path, capsys, monkeypatch):
    from processing.detectors.segmentation import SegmentationDetector

    out = tmp_path / "failed"
    original = SegmentationDetector.score
    monkeypatch.setattr(SegmentationDetector, "score", lambda self, batch: (_ for _ in ()).throw(ValueError("the model broke")))
    # Not the user's input: a bug, said as one line (its traceback under -v), exit code 1.
    assert run_error(base_args(model, work, out, images / "line1" / "good"), capsys, code=1).startswith(
        "internal error: ValueError: the model broke (a bug, not your input: rerun with -v")
    assert not out.exists(), "a failed run left its output folder"
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "mine.txt").write_text("the user's")
    run_error([*base_args(model, work, existing, images / "line1" / "good"), "--masks"], capsys, code=1)
    assert [p.name for p in existing.iterdir()] == ["mine.txt"]

    calls = []  # fails after the first batch: those rows stay, the run says it failed, --resume completes it

    def second_fails(self, batch):
        calls.append(len(batch))
        if len(calls) > 1:
            raise ValueError("the model broke")
        return original(self, batch)

    monkeypatch.setattr(SegmentationDetector, "score", second_fails)
    run_error([*base_args(model, work, out, images / "line1" / "good"), "-b", "4"], capsys, code=1)
    settings = json.loads((out / SETTINGS_FILE).read_text())
    assert settings["runs"][-1]["status"] == "failed" and settings["runs"][-1]["error"] == "the model broke"
    kept = rows_of(out)
    assert 4 <= len(kept) < 8
    monkeypatch.setattr(SegmentationDetector, "score", original)
    run_ok([*base_args(model, work, out, images / "line1" / "good"), "--resume"])
    assert len(rows_of(out)) == 8 and rows_of(out)[: len(kept)] == kept


def test_a_full_disk_names_the_file(model, work, images, tmp_path, capsys):
    """A 2 MiB tmpfs as output (root), else a write that fails with ENOSPC: the line names the file."""
    import errno

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True).returncode == 0
    try:
        if mounted:
            big = tmp_path / "big"
            big.mkdir()
            rng = np.random.default_rng(0)
            for index in range(6):
                cv2.imwrite(str(big / f"{index}.png"), (rng.random((400, 400, 3)) * 255).astype(np.uint8))
            err = run_error([*base_args(model, work, disk / "out", big), "--overlays"], capsys)
        else:
            from autoencoder import folders

            def full(path, data):
                raise folders.naming(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))

            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(folders, "write_bytes_atomic", full)
                patch.setattr(bundle, "write_json", lambda path, data: full(path, b""))
                err = run_error(base_args(model, work, disk / "out", images / "line1" / "good"), capsys)
        assert re.fullmatch(rf"error: {re.escape(str(disk / 'out'))}/\S+: no space left on the device", err), err
        assert not (disk / "out").exists()
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=True)


def test_resume_compares_resolved_paths(model, work, images, tmp_path, monkeypatch):
    """The same images given relative, then absolute (or through a link) are predicted once."""
    monkeypatch.chdir(images)
    out = tmp_path / "resolved"
    run_ok(base_args(model, work, out, Path("line1") / "good"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link").symlink_to(images / "line1")
    run_ok([*base_args(model, work, out, images / "line1" / "good", tmp_path / "link" / "crack"), "--resume"])
    rows = rows_of(out)
    assert len(rows) == 8 + 4 and len({os.path.realpath(images / row["path"]) for row in rows}) == 12
    assert all(not os.path.isabs(row["path"]) for row in rows[:8]) and all(os.path.isabs(row["path"]) for row in rows[8:])
    assert 'href="./predictions.csv"' in (out / REPORT_FILE).read_text()


def test_resume_refuses_predictions_of_a_changed_result(model, work, images, tmp_path, capsys):
    """Another finetuning result of the same name (finetune.py --overwrite) would mix two thresholds in one CSV."""
    results = tmp_path / "results"
    shutil.copytree(work / "results", results)
    out = tmp_path / "out"
    argv = ["-p", str(model), "-i", str(images / "line1" / "good"), "-o", str(out), "--results-dir", str(results)]
    run_ok(argv)
    before = snapshot(out)
    finetune.main(["-p", str(model), "--smoothing", "1", "--overwrite", "--results-dir", str(results)])
    err = run_error([*argv, "--resume"], capsys)
    assert "the finetuning result l2_float64 changed since these predictions were made" in err and "--overwrite" in err
    assert snapshot(out) == before


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("edit, expected", [
    (lambda s: [], "predict_settings.json: expected a JSON object"),
    (lambda s: s | {"runs": "x"}, "runs \"x\": expected a list"),
    (lambda s: s | {"cwd": 3}, "cwd 3: expected a string"),
])
def test_hand_edited_settings_are_one_line(predicted, model, work, images, tmp_path, capsys, edit, expected):
    out = tmp_path / "edited"
    shutil.copytree(predicted, out)
    settings = json.loads((out / SETTINGS_FILE).read_text())
    (out / SETTINGS_FILE).write_text(json.dumps(edit(settings)))
    before = snapshot(out)
    err = run_error([*base_args(model, work, out, images), "--resume"], capsys)
    assert expected in err and "--overwrite" in err, err
    assert snapshot(out) == before


def test_a_hand_edited_csv_is_one_line(predicted, model, work, images, tmp_path, capsys):
    out = tmp_path / "edited"
    shutil.copytree(predicted, out)
    lines = (out / PREDICTIONS_FILE).read_text().splitlines()
    first = next(csv.reader([lines[1]]))
    first[1] = "abc"
    lines[1] = ",".join(first)
    (out / PREDICTIONS_FILE).write_text("\n".join(lines) + "\n")
    before = snapshot(out)
    err = run_error([*base_args(model, work, out, images), "--resume"], capsys)
    assert err == f"error: {out / PREDICTIONS_FILE} line 2: score 'abc' is not a number; not a row predict.py wrote (pass --overwrite " \
                  "to predict again)"
    assert snapshot(out) == before
