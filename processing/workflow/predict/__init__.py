"""predict.py, split by concern: the run (run.py), its settings and output folder (settings.py),
predictions.csv (csv_io.py), reading the images (loading.py), the report (report.py), and
--shard/--merge (shards.py)."""

from processing.workflow.predict.csv_io import CSV_COLUMNS, read_done, read_predictions  # noqa: F401
from processing.workflow.predict.run import Predictor, check_inputs_and_output, load_detector, predict  # noqa: F401
from processing.workflow.predict.settings import (  # noqa: F401
    HEATMAPS_DIR,
    MASKS_DIR,
    OUTPUT_ENTRIES,
    OVERLAYS_DIR,
    PREDICTIONS_FILE,
    REPORT_DIR,
    REPORT_FILE,
    SETTINGS_FILE,
    PredictConfig,
    PredictSummary,
    parse_shard,
)
from processing.workflow.predict.shards import check_merge, merge_predictions, shard_files  # noqa: F401
