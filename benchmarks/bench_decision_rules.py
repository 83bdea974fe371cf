"""The decision rules of finetune.py compared: how much of the balanced accuracy the scores allow do
the verdicts keep on the test images the finetuning never saw?

For every dataset the default model of benchmark.py is trained once; then for each rule
(``smoothed``, ``original``) and each seed of the finetuning split the decision is finetuned and
tested with benchmark.py's settings. Per run it prints the verdicts' balanced accuracy, TPR and
TNR, the best balanced accuracy one threshold on the same image scores reaches on the same test
images (in hindsight), their ratio, the chosen pair and what finetune.py expected. Per rule it
prints the mean ratio, the spread of the chosen pair over the seeds and the share of common test
images on which the seeds' verdicts agree; for the first seed, the rows per defect type.

    python benchmarks/bench_decision_rules.py ../shared/datasets/magnetic_tile ../shared/datasets/crackforest demo_data/brick
    python benchmarks/bench_decision_rules.py demo_data/brick --seeds 42 --quick      # a smoke run: 32 px

Writes <output-dir>/decision_rules_<time>.json (default output dir: results/bench_decision_rules).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoencoder import bundle, cli  # noqa: E402
from processing.decision.thresholds import RULES  # noqa: E402

logger = logging.getLogger("bench_decision_rules")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", help="dataset roots in MVTec AD layout")
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 1, 2], help="seeds of the finetuning split")
    parser.add_argument("--output-dir", default="results/bench_decision_rules")
    parser.add_argument("--quick", action="store_true", help="32 px models (a smoke run, not a measurement)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def train_default(dataset: str, config, models_dir: Path) -> Path:
    from processing.workflow.benchmarking import expand_grid
    from processing.workflow.training import TrainConfig, train

    (spec,) = expand_grid(config)
    return Path(train(TrainConfig(
        input_dir=dataset, architecture=spec.architecture, color_mode=config.color_mode, loss=spec.loss,
        batch_size=config.batch_size, epochs=config.epochs, image_size=spec.image_size, learning_rate=config.learning_rate,
        augment=config.augment, seed=config.seed, output_dir=str(models_dir), patience=config.patience,
    ))), spec


def verdicts(test_dir: str) -> dict[str, int]:
    with open(Path(test_dir) / "classification.csv", newline="") as handle:
        return {row["file"]: int(row["prediction"]) for row in csv.DictReader(handle)}


def agreement(runs: list[dict]) -> float | None:
    """Lowest share, over pairs of seeds, of their common test images with the same verdict."""
    shares = []
    for first, second in itertools.combinations(runs, 2):
        a, b = verdicts(first["test_dir"]), verdicts(second["test_dir"])
        common = set(a) & set(b)
        if common:
            shares.append(sum(a[name] == b[name] for name in common) / len(common))
    return min(shares) if shares else None


def run_row(dataset: str, rule: str, seed: int, record: dict) -> dict:
    test, finetuning = record["test"], record["finetuning"]
    result = json.loads((Path(record["finetuning_dir"]) / "finetuning_result.json").read_text())
    return {
        "dataset": dataset, "rule": rule, "seed": seed,
        "balanced_accuracy": test.get("balanced_accuracy"), "tpr": test.get("tpr"), "tnr": test.get("tnr"),
        "best_threshold_balanced_accuracy": test.get("best_threshold_balanced_accuracy"),
        "ratio": test.get("balanced_accuracy_ratio"), "image_auroc": test.get("image_auroc"),
        "min_area": result["best_min_area"], "threshold": result["best_threshold"],
        "finetuning_balanced_accuracy": finetuning.get("best_score"), "expected": result.get("expected"),
        "warnings": result.get("warnings", []), "per_defect_type": test.get("per_defect_type", {}),
        "test_dir": record["test_dir"], "finetune_s": record["timings_s"]["finetune_s"],
    }


def fmt(value, spec=".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def main(argv=None):
    args = parse_args(argv)
    cli.setup_logging(args.verbose)
    cli.import_tensorflow(args.verbose)
    from processing.workflow.benchmarking import QUICK_OVERRIDES, BenchmarkConfig, evaluate_map, methods_for

    out = Path(args.output_dir)
    stamp = bundle.timestamp()
    rows, summaries = [], []
    for dataset in args.datasets:
        name = Path(dataset).name
        config = BenchmarkConfig(input_dir=dataset, output_dir=str(out / name), models_dir=str(out / name / "models"))
        if args.quick:
            config = replace(config, **QUICK_OVERRIDES)
        config.validate()
        started = time.perf_counter()
        folder, spec = train_default(dataset, config, Path(config.models_dir))
        logger.info("%s: trained %s in %.0f s", name, folder, time.perf_counter() - started)
        (method,) = methods_for(spec, config)[:1]
        for rule in args.rules:
            runs = []
            for seed in args.seeds:
                root = out / name / f"{rule}_seed{seed}_{stamp}"
                record = evaluate_map(folder, method, replace(config, rule=rule), str(root), seed=seed)
                runs.append(run_row(name, rule, seed, record))
            rows.extend(runs)
            ratios = [run["ratio"] for run in runs if run["ratio"] is not None]
            thresholds = [run["threshold"] for run in runs]
            summaries.append({
                "dataset": name, "rule": rule, "mean_ratio": sum(ratios) / len(ratios) if ratios else None,
                "min_ratio": min(ratios) if ratios else None,
                "mean_balanced_accuracy": sum(r["balanced_accuracy"] for r in runs) / len(runs),
                "min_areas": [run["min_area"] for run in runs], "threshold_range": [min(thresholds), max(thresholds)],
                "verdict_agreement": agreement(runs),
            })

    print("\nper run (test images outside each run's finetuning subset)")
    header = "dataset          rule      seed  BA     TPR    TNR    bestBA ratio  min_area threshold  expected TPR / TNR"
    print(header)
    for row in rows:
        expected = row["expected"] or {}
        print(f"{row['dataset'][:16]:16s} {row['rule']:9s} {row['seed']:4d}  {fmt(row['balanced_accuracy'])}  {fmt(row['tpr'])}  "
              f"{fmt(row['tnr'])}  {fmt(row['best_threshold_balanced_accuracy'])}  {fmt(row['ratio'])}  {row['min_area']:8d} "
              f"{row['threshold']:9.4g}  {fmt(expected.get('tpr'), '.2f')} {expected.get('tpr_interval', '')} / "
              f"{fmt(expected.get('tnr'), '.2f')} {expected.get('tnr_interval', '')}")
    print("\nper rule over the seeds")
    print("dataset          rule      mean BA  mean ratio  min ratio  verdict agreement  min_areas          threshold range")
    for summary in summaries:
        low, high = summary["threshold_range"]
        print(f"{summary['dataset'][:16]:16s} {summary['rule']:9s} {fmt(summary['mean_balanced_accuracy'])}    "
              f"{fmt(summary['mean_ratio'])}       {fmt(summary['min_ratio'])}      {fmt(summary['verdict_agreement'])}              "
              f"{str(summary['min_areas']):18s} {low:.4g} - {high:.4g}")
    first = args.seeds[0]
    print(f"\nper defect type (seed {first}): balanced accuracy / ratio to the best one threshold reaches")
    for row in rows:
        if row["seed"] != first:
            continue
        cells = [f"{kind} {fmt(m.get('balanced_accuracy'))}/{fmt(m.get('balanced_accuracy_ratio'))}"
                 for kind, m in sorted(row["per_defect_type"].items()) if kind != "good"]
        print(f"{row['dataset'][:16]:16s} {row['rule']:9s} " + "  ".join(cells))
    by_rule = {rule: [s["mean_ratio"] for s in summaries if s["rule"] == rule and s["mean_ratio"] is not None] for rule in args.rules}
    print("\nmean ratio over the datasets: " + ", ".join(
        f"{rule} {sum(v) / len(v):.3f} (lowest {min(v):.3f})" for rule, v in by_rule.items() if v))
    out.mkdir(parents=True, exist_ok=True)
    path = bundle.write_json(out / f"decision_rules_{stamp}.json", {"command": bundle.command_line(), "rows": rows, "summaries": summaries})
    print(f"written {path}")


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
