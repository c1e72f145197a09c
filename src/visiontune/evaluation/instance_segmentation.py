"""Instance segmentation, evaluated: COCO box and mask AP of a Mask R-CNN, the COCO results file and overlays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from torch import Tensor

from visiontune.evaluation.coco import CocoEvaluator, CocoPerImage
from visiontune.utils import comm
from visiontune.utils.drawing import draw_instances
from visiontune.utils.files import atomic_write_json
from visiontune.utils.image_tensors import tensor_to_rgb
from visiontune.utils.paths import flatten_name, safe_output_names

__all__ = ["NUM_OVERLAYS", "CocoSplit", "InstanceSegmentationEvaluator", "with_category_ids"]

NUM_OVERLAYS = 4
"""Evaluated images drawn by :meth:`InstanceSegmentationEvaluator.save_artifacts`."""


class _ImageEntry(Protocol):
    @property
    def file_name(self) -> str: ...


class CocoSplit(Protocol):
    """The evaluated split (:class:`~visiontune.data.coco_dataset.CocoInstanceDataset`)."""

    image_ids: list[int]
    """COCO image id of every item."""

    def coco_ground_truth(self) -> dict[str, Any]:
        """The split as a COCO ground-truth dict (crowd regions kept)."""
        ...

    def image_record(self, index: int) -> _ImageEntry:
        """The image entry of item ``index`` (``file_name``)."""
        ...

    def load_image(self, index: int) -> Tensor:
        """The image of item ``index``, float ``[3, H, W]`` in [0, 1]."""
        ...


def with_category_ids(detections: Sequence[Mapping[str, Any]], label_to_category_id: Mapping[int, int]
                      ) -> list[dict[str, Any]]:
    """Copies of COCO results with the model label in ``category_id`` replaced by the original category id."""
    return [{**detection, "category_id": label_to_category_id[int(detection["category_id"])]}
            for detection in detections]


class InstanceSegmentationEvaluator:
    """COCO box and mask AP of a Mask R-CNN over one :class:`~visiontune.data.coco_dataset.CocoInstanceDataset`.

    ``update`` takes the model's eval outputs (one dict per image: ``boxes`` float ``[N, 4]`` xyxy in pixels of the
    original image, ``labels`` int64 ``[N]`` in ``1..K``, ``scores`` float ``[N]``, ``masks`` float ``[N, 1, H, W]``
    probabilities) and the batch targets (``image_id`` is read). ``compute`` returns ``bbox_AP``, ``bbox_AP50``,
    ``bbox_AP75``, ``bbox_APs/m/l``, the same with ``segm_``, and ``<type>_AP_<category name>`` per category.

    Args:
        dataset: The evaluated split; its ``coco_ground_truth()`` keeps crowd regions (ignored by COCO matching).
        label_to_category_id: Model label -> original COCO category id (for the results file).
        class_names: ``class_names[label - 1]`` (for the overlays).
        mask_threshold: Probability above which a mask pixel is foreground.
        vis_threshold: Lowest score drawn on the overlays.
        num_overlays: Evaluated images drawn by :meth:`save_artifacts`.
    """

    def __init__(
        self,
        dataset: CocoSplit,
        *,
        label_to_category_id: Mapping[int, int],
        class_names: Sequence[str],
        mask_threshold: float = 0.5,
        vis_threshold: float = 0.5,
        num_overlays: int = NUM_OVERLAYS,
    ) -> None:
        self.dataset = dataset
        self.label_to_category_id = dict(label_to_category_id)
        self.class_names = list(class_names)
        self.vis_threshold = vis_threshold
        self.num_overlays = num_overlays
        self.coco = CocoEvaluator(dataset.coco_ground_truth(), mask_threshold=mask_threshold)

    def reset(self) -> None:
        self.coco.reset()
        self._gathered_on_main = False

    def update(self, outputs: Sequence[Mapping[str, Tensor]], targets: Sequence[Mapping[str, Any]]) -> None:
        self.coco.update(outputs, targets)

    def synchronize(self) -> None:
        """Gather the detections of every rank on rank 0 only (no-op in one process): rank 0 alone runs COCOeval
        in :meth:`compute` (the other ranks neither receive every result nor score them)."""
        if comm.current_info().world_size == 1:
            return
        parts = comm.reduce_objects_to_main(self.coco._results)
        if parts is not None:
            merged: dict[int, list[dict[str, Any]]] = {}
            for part in parts:
                merged.update(part or {})
            self.coco._results = merged
        self._gathered_on_main = True

    def compute(self) -> dict[str, float]:
        """The COCO metrics; after a distributed :meth:`synchronize` rank 0 computes them and broadcasts them to
        every rank (an error there is raised on every rank)."""
        if getattr(self, "_gathered_on_main", False) and comm.current_info().world_size > 1:
            return comm.main_process_result(self.coco.compute)
        return self.coco.compute()

    def per_image_results(self) -> CocoPerImage:
        """The per-image matches behind ``bbox_AP`` / ``segm_AP`` (:meth:`CocoEvaluator.per_image_results`; on rank
        0 after a distributed :meth:`synchronize`)."""
        return self.coco.per_image_results()

    def save_artifacts(self, out_dir: Path) -> list[Path]:
        """Write ``coco_results.json`` and ``overlays/<image>.png`` for the first evaluated images.

        ``coco_results.json`` holds every detection in the COCO results format with the original category ids
        (``bbox`` ``[x, y, w, h]`` pixels, ``score``, ``segmentation`` RLE), loadable with ``COCO.loadRes`` against
        the split's annotation file. The overlays show detections scoring at least ``vis_threshold``.

        Returns:
            The written paths.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        detections = self.coco.detections()
        results_path = atomic_write_json(with_category_ids(detections, self.label_to_category_id),
                                         out_dir / "coco_results.json", indent=None)
        by_image: dict[int, list[dict[str, Any]]] = {}
        for detection in detections:
            by_image.setdefault(int(detection["image_id"]), []).append(detection)
        return [results_path, *self._save_overlays(out_dir, by_image)]

    def _save_overlays(self, out_dir: Path, by_image: Mapping[int, list[dict[str, Any]]]) -> list[Path]:
        """Draw the first ``num_overlays`` evaluated images of distinct file names (an image whose name is taken is
        skipped, not overwritten) with their detections into ``out_dir/overlays/<file name>.png``."""
        evaluated = set(self.coco.image_ids)
        chosen: dict[str, tuple[int, int, str]] = {}  # overlay name -> (dataset index, image id, file_name)
        for index, image_id in enumerate(self.dataset.image_ids):
            if len(chosen) >= self.num_overlays:
                break
            file_name = self.dataset.image_record(index).file_name
            flattened, _ = flatten_name(file_name)
            if image_id in evaluated and flattened is not None:
                chosen.setdefault(PurePosixPath(flattened.name).stem, (index, image_id, file_name))
        names = safe_output_names(out_dir, [file_name for *_, file_name in chosen.values()], source="evaluation",
                                  suffixes=(".png",), folder="overlays", flat=True)
        written: list[Path] = []
        for (index, image_id, _), name in zip(chosen.values(), names):
            image = tensor_to_rgb(self.dataset.load_image(index))
            overlay = draw_instances(image, by_image.get(image_id, []), class_names=self.class_names,
                                     score_threshold=self.vis_threshold)
            path = out_dir / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            overlay.save(path)
            written.append(path)
        return written
