"""Reviewed verdicts back into the decision (issue 29): predict.py's review.csv, finetune.py --reviewed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import finetune
import predict as predict_script
import test as test_script
from autoencoder import bundle, cli
from processing.data.reviews import REVIEW_FILE, read_reviews, write_review_sheet


def write_csv(path, rows, columns=("path", "review")):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def test_a_review_file_is_read_and_checked(tmp_path):
    images = []
    for name in ("a.png", "b.png", "=HYPERLINK(x).png"):
        cv2.imwrite(str(tmp_path / name), np.zeros((4, 4), np.uint8))
        images.append(tmp_path / name)
    write_review_sheet(tmp_path / REVIEW_FILE, [{"path": str(path), "score": str(i), "defective": "1"} for i, path in enumerate(images)])
    text = (tmp_path / REVIEW_FILE).read_text()
    assert text.splitlines()[0] == "path,score,verdict,review" and "'=HYPERLINK" not in text.splitlines()[1]  # formulas escaped
    assert f"'{images[2]}" not in text or text.count("'=") == 0
    rows = list(csv.DictReader((tmp_path / REVIEW_FILE).read_text().splitlines()))
    assert sorted(row["score"] for row in rows) == ["0", "1", "2"]  # every row, once
    many = tmp_path / "many"
    many.mkdir()
    write_review_sheet(many / REVIEW_FILE, [{"path": f"{i}.png", "score": str(i), "defective": "0"} for i in range(200)])
    order = [int(row["score"]) for row in csv.DictReader((many / REVIEW_FILE).read_text().splitlines())]
    assert sorted(order) == list(range(200)) and order != sorted(order) and order != sorted(order, reverse=True)
    assert 60 < np.mean(order[:50]) < 140  # the top rows a fair sample, not the highest or lowest scores
    rows = sorted(rows, key=lambda row: -float(row["score"]))
    rows[0]["review"], rows[1]["review"] = "defective", "Good "
    write_csv(tmp_path / "filled.csv", rows, rows[0].keys())
    reviewed = read_reviews([tmp_path / "filled.csv"])
    assert [(path.name, label) for path, label in reviewed.images] == [("=HYPERLINK(x).png", True), ("b.png", False)]
    assert reviewed.record()["n_defective"] == 1 and reviewed.record()["sources"][0]["n_good"] == 1
    assert write_review_sheet(tmp_path / REVIEW_FILE, []) is False  # an existing sheet (the inspector's labels) is kept
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "folder").mkdir()
    for rows, message in (
        ([{"path": "a.png", "review": "maybe"}], "line 2: review 'maybe': expected good, defective or nothing"),
        ([{"path": "gone.png", "review": "good"}], "line 2: .*gone.png: not found"),
        ([{"path": "notes.txt", "review": "good"}], "line 2: .*notes.txt: not a readable image"),
        ([{"path": "folder", "review": "good"}], "line 2: .*folder: a folder, not a file"),
        ([{"path": "", "review": "good"}], "line 2: no path"),
        ([{"path": "a.png", "review": "good"}, {"path": "./a.png", "review": "defective"}], "line 3: .*a.png is reviewed defective"),
        ([{"path": "a.png", "review": ""}], "no row has a review"),
    ):
        write_csv(tmp_path / "bad.csv", rows)
        with pytest.raises(ValueError, match=message):
            read_reviews([tmp_path / "bad.csv"])
    write_csv(tmp_path / "header.csv", [])
    with pytest.raises(ValueError, match="holds no row"):
        read_reviews([tmp_path / "header.csv"])
    write_csv(tmp_path / "other.csv", [{"file": "a.png", "label": "good"}], ("file", "label"))
    with pytest.raises(ValueError, match="expected the columns path and review"):
        read_reviews([tmp_path / "other.csv"])


def test_reviewed_predictions_join_the_finetuning_data(finetuned_copy, tmp_path, capsys):
    root, model = finetuned_copy
    results = root / "results"
    out = tmp_path / "predicted"
    dataset = Path(bundle.read_info(model).dataset.path)  # the shared dataset the copy's model was trained on
    chosen = sorted((dataset / "test").rglob("*.png"))[:6]
    predict_script.main(["-p", str(model), "-i", *map(str, chosen), "-o", str(out), "--results-dir", str(results)])
    with open(out / REVIEW_FILE, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["path"] for row in rows) == sorted(map(str, chosen)) and all(row["review"] == "" for row in rows)
    for row in rows:
        row["review"] = "good" if "/good/" in row["path"] else "defective"
    write_csv(out / REVIEW_FILE, rows, rows[0].keys())
    assert cli.run(finetune.main, ["-p", str(model), "--results-dir", str(results), "--reviewed", str(tmp_path / "nope.csv")]) == 2
    assert "--reviewed" in capsys.readouterr().err
    folder = finetune.main(["-p", str(model), "--results-dir", str(results), "--reviewed", str(out / REVIEW_FILE), "--overwrite"])
    result = json.loads((folder / "finetuning_result.json").read_text())
    assert result["reviewed"]["n_good"] + result["reviewed"]["n_defective"] == 6
    # Those of the dataset's test images are finetuning images now: test.py leaves them out.
    tuned = set(result["finetuning_files"])
    assert {str(path.relative_to(dataset)) for path in chosen} <= tuned
    (test_dir,) = test_script.main(["-p", str(model), "--results-dir", str(results), "--overwrite"])
    with open(test_dir / "classification.csv", newline="") as handle:
        tested = {row["file"] for row in csv.DictReader(handle)}
    assert not tested & tuned
