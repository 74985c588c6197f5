"""What the series page reads from the stored DICOM: header, slice-score plot, heat-map frames."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom.errors import InvalidDicomError

from console import dicom_view, svg
from console.config import ConsoleRuntime
from db.enums import ExportKind
from db.overview import SeriesDetail

#: Heat-map frames shown per Secondary Capture.
MAX_FRAMES = 8


@dataclass(frozen=True)
class SeriesView:
    """The parts of the series page read from files."""

    header: dicom_view.StudyHeader | None
    plot: str
    """The slice scores along the series, in instance order, as inline SVG."""
    heatmaps: list[tuple[int, int]]
    """(export id, frame) of each heat-map image to show."""


def stored(path: str, root: Path) -> Path:
    """A stored path: absolute as recorded, or relative to its root folder."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else root / candidate


def build(runtime: ConsoleRuntime, detail: SeriesDetail, *, with_patient: bool) -> SeriesView:
    """Read what the series page shows from the stored instances and reports."""
    paths = [stored(p, runtime.storage_dir) for p in detail.instance_paths]
    header = dicom_view.read_header(paths[0], with_patient=with_patient) if paths else None
    scores = {s.sop_instance_uid: s.probability for s in detail.slice_scores}
    numbers = dicom_view.instance_numbers(paths) if scores else []
    ordered = sorted(
        (number if number is not None else index, uid)
        for index, (number, uid) in enumerate(zip(numbers, detail.instance_uids, strict=False))
        if uid in scores
    )
    plot = svg.line_plot([scores[uid] for _, uid in ordered], threshold=detail.row.threshold)
    heatmaps: list[tuple[int, int]] = []
    shown: set[str] = set()  # one SC file has an export row per destination: show it once
    for export in detail.exports:
        if export.kind is ExportKind.SC and export.path not in shown:
            shown.add(export.path)
            try:
                frames = dicom_view.frame_count(stored(export.path, runtime.reports_dir))
            except (OSError, InvalidDicomError):
                continue
            heatmaps += [(export.id, frame) for frame in range(min(frames, MAX_FRAMES))]
    return SeriesView(header=header, plot=plot, heatmaps=heatmaps)
