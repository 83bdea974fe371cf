"""The segmentation detector's export plan: its map model's graph, post-processing and threshold."""

from __future__ import annotations

from autoencoder.errors import UserError
from processing.detectors.base import ExportPlan
from processing.maps.map_model import restrict_tensor


class SegmentationExportPlan(ExportPlan):
    """The segmentation detector's maps, combination, post-processing and threshold as one graph;
    the component rule (min_area, border) and the component image score are left to the runner."""

    def __init__(self, detector):  # a SegmentationDetector (which imports this module when it exports)
        self.name = detector.result_name(detector.result)
        self.graph = detector.maps.graph(self.name)
        self.models = self.graph.models
        self.size = self.graph.size
        self.dtype, self.threshold, self.min_area = detector.dtype, detector.threshold, detector.min_area
        self.clear_border, self.image_score = detector.clear_border, detector.image_score
        self.no_defect_score = detector.no_defect_score
        self.value_range = detector.spec.value_range("float64")

    def large_arrays(self) -> dict:
        return self.graph.large_arrays()

    def bind(self, tensors: dict) -> None:
        self.graph.bind(tensors)

    @property
    def decision_in_graph(self) -> bool:
        """Whether the decision is ``map maximum > threshold`` (min_area 1, border components kept)."""
        return self.min_area == 1 and not self.clear_border

    def check_format(self, fmt: str, dtype: str) -> None:
        if self.dtype == "uint8" and dtype != "float64":
            raise UserError(
                f"result {self.name} uses uint8 maps, whose rounding at .5 a {dtype} {fmt} graph cannot reproduce; "
                "export it as savedmodel (float64), or finetune with -t float64"
            )

    def outputs(self, images, dtype: str) -> dict:
        from keras import ops

        maps = self.graph.raw_maps(images, dtype)
        if self.dtype == "uint8":  # as calculate_resmaps: the clipped map scaled onto 0..255, rounded half to even
            low, high = self.value_range
            maps = ops.round((maps - low) * (255.0 / (high - low)))
            maps = ops.clip(ops.round(self.graph.postprocess.tensor(maps, dtype)), 0.0, 255.0)
        else:
            maps = self.graph.postprocess.tensor(maps, dtype)
        maps = restrict_tensor(maps, self.graph.roi)  # the region of interest, as MapModel.maps applies it
        threshold = ops.convert_to_tensor(self.threshold, dtype=dtype)
        highest = ops.max(maps, axis=(1, 2))
        above = maps > threshold
        if self.graph.roi is not None:  # nothing outside the region of interest is above the threshold
            above = ops.logical_and(above, ops.convert_to_tensor(self.graph.roi[None]))
        outputs = {"anomaly_map": ops.cast(maps, "float32"), "above_threshold": above}
        if self.image_score == "max":
            outputs["image_score"] = ops.cast(highest, "float32")
        if self.decision_in_graph:
            outputs["defective"] = highest > threshold
        return outputs

    def describe_outputs(self, size: tuple[int, int]) -> dict[str, str]:
        height, width = size
        described = {
            "anomaly_map": f"float32 (N, {height}, {width}): the post-processed anomaly map (higher = more anomalous)",
            "above_threshold": f"bool (N, {height}, {width}): anomaly_map > threshold, before the component rule",
        }
        if self.image_score == "max":
            described["image_score"] = "float32 (N,): the map's maximum, the image score"
        if self.decision_in_graph:
            described["defective"] = "bool (N,): the decision (min_area 1, border kept: the map's maximum > threshold)"
        return described

    def decision(self) -> dict:
        return {
            "detector": "segmentation",
            "rule": "components",
            "threshold": self.threshold,
            "min_area": self.min_area,
            "clear_border": self.clear_border,
            "image_score": self.image_score,
            "no_defect_score": self.no_defect_score,
            "map_dtype": self.dtype,
            "decision_in_graph": self.decision_in_graph,
            "text": (
                f"defective = a connected region (8-connectivity) of anomaly_map > threshold of at least {self.min_area} pixels"
                + (" not touching the image border" if self.clear_border else "")
                + "; image score = "
                + ("the map's maximum" if self.image_score == "max" else "the highest threshold at which such a region survives")
            ),
        }
