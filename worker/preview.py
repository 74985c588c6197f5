"""A preview of the key slices for the alert: one small JPEG, plainly not for diagnosis.

Triage devices send a compressed, non-diagnostic image of the key slices with their alert, so
that the stroke team sees at a glance what the model flagged. It is the key slices (the SR's
top slices, most suspicious first; for a thin series averaged into slabs, each top slab's middle
slice) in the brain window, side by side, below a banner that
burns in the verdict, the probability, the model version, the classified series and "NOT FOR
DIAGNOSTIC USE"; each tile is marked R and L. No patient name or ID is burned in, but the
image is still patient data: the console serves it behind a login or a token, and e-mail
attaches it only where a destination opts in.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.uid import generate_uid

import db.results
import db.studies
from dicom_edge import write_atomic
from model.dicom import dataset_to_hu
from model.pixels import apply_window
from model.spec import WINDOW_PRESETS
from worker.classification import Verdict
from worker.context import WorkerContext
from worker.inputs import SeriesInputs
from worker.report import decimals_for

log = logging.getLogger(__name__)

NOT_FOR_DIAGNOSIS = "NOT FOR DIAGNOSTIC USE"
PREVIEW_SLICES = 4
"""Most slices in the preview."""
TILE_SIZE = 256
"""Edge of one tile, in pixels: enough to see a finding, too small to read the study from."""
BANNER_HEIGHT = 66
GAP = 4
"""Pixels between two tiles, so that one slice's L does not run into the next one's R."""
JPEG_QUALITY = 70
DISPLAY_WINDOW = WINDOW_PRESETS["brain"]
"""What a reader expects of a head CT (40/80 HU), whatever windows the model itself reads."""


@dataclass(frozen=True)
class PreviewText:
    """What the banner says."""

    headline: str
    """``AI ICH TRIAGE: SUSPECTED``."""
    probability: float
    threshold: float
    model: str
    """The model's name and version."""
    series: str
    """The classified series: ``series 2 HEAD 5mm STD``."""


def series_label(dataset: pydicom.Dataset) -> str:
    """``series 2 HEAD 5mm STD``: how the report, the preview and the alert name a series."""
    number = str(dataset.get("SeriesNumber", "") or "?")
    description = str(dataset.get("SeriesDescription", "") or "").strip()
    return f"series {number} {description}".strip()


def render_preview(slices: Sequence[pydicom.Dataset], text: PreviewText) -> bytes:
    """The preview of some slices as a JPEG.

    Args:
        slices: The key slices, most suspicious first, with pixel data.
        text: What the banner says.

    Returns:
        The JPEG's bytes (8-bit RGB, quality :data:`JPEG_QUALITY`).

    Raises:
        ValueError: No slice given.
    """
    if not slices:
        raise ValueError("A preview needs at least one slice.")
    shown = list(slices[:PREVIEW_SLICES])
    width = TILE_SIZE * len(shown) + GAP * (len(shown) - 1)
    canvas = Image.new("RGB", (width, BANNER_HEIGHT + TILE_SIZE), "dimgray")
    canvas.paste((0, 0, 0), (0, 0, width, BANNER_HEIGHT))
    draw = ImageDraw.Draw(canvas)
    small, large = ImageFont.load_default(size=13), ImageFont.load_default(size=17)
    for index, dataset in enumerate(shown):
        left = index * (TILE_SIZE + GAP)
        canvas.paste(_tile(dataset), (left, BANNER_HEIGHT))
        label = f"key slice {index + 1}: image {dataset.get('InstanceNumber', '?')}"
        _outlined(draw, (left + 5, BANNER_HEIGHT + 5), label, font=small, fill="white")
        left_side, right_side = _sides(dataset)
        middle = BANNER_HEIGHT + TILE_SIZE // 2
        _outlined(draw, (left + 5, middle), left_side, font=large, anchor="lm")
        _outlined(draw, (left + TILE_SIZE - 5, middle), right_side, font=large, anchor="rm")
    draw.text((6, 4), NOT_FOR_DIAGNOSIS, fill="yellow", font=large)
    draw.text(
        (6, 25),
        verdict_line(text),
        fill="white",
        font=small,
    )
    draw.text((6, 44), f"{text.series} | model {text.model}", fill="white", font=small)
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()


def verdict_line(text: PreviewText) -> str:
    """``AI ICH TRIAGE: SUSPECTED  p=0.63 (threshold 0.42)``: the numbers as the SR prints them."""
    places = decimals_for(probability=text.probability, threshold=text.threshold)
    return (
        f"{text.headline}  p={text.probability:.{places}f} (threshold {text.threshold:.{places}f})"
    )


def _outlined(
    draw: ImageDraw.ImageDraw,
    at: tuple[int, int],
    text: str,
    *,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    fill: str = "yellow",
    anchor: str = "la",
) -> None:
    """Text with a black outline, readable on bone as on air."""
    draw.text(at, text, fill=fill, font=font, anchor=anchor, stroke_width=2, stroke_fill="black")


def _tile(dataset: pydicom.Dataset) -> Image.Image:
    """One slice in the brain window, scaled to fit a square tile (aspect kept, padded)."""
    unit = apply_window(dataset_to_hu(dataset), DISPLAY_WINDOW)
    image = Image.fromarray(np.round(unit * 255.0).astype(np.uint8), mode="L")
    scale = TILE_SIZE / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.BILINEAR)
    tile = Image.new("L", (TILE_SIZE, TILE_SIZE))
    tile.paste(image, ((TILE_SIZE - size[0]) // 2, (TILE_SIZE - size[1]) // 2))
    return tile.convert("RGB")


def _sides(dataset: pydicom.Dataset) -> tuple[str, str]:
    """The patient's side at the image's left and right edges (R and L for a standard axial).

    Columns run along the first direction cosine of Image Orientation (Patient), in the
    patient's LPS axes: +x points to the patient's left, so an axial image whose rows run +x
    shows the patient's right on the image's left (the radiological convention).
    """
    orientation = dataset.get("ImageOrientationPatient")
    row = [float(value) for value in orientation[:3]] if orientation else [1.0, 0.0, 0.0]
    axis = int(np.argmax(np.abs(row)))
    letters = (("R", "L"), ("A", "P"), ("F", "H"))[axis]  # toward -axis, toward +axis
    return letters if row[axis] > 0 else (letters[1], letters[0])


def write_preview(ctx: WorkerContext, inputs: SeriesInputs, verdict: Verdict) -> Path | None:
    """Render the result's preview, write it beside its reports, and record it.

    The file's name is derived from the inputs and the model, so a re-run writes the same file.
    A preview that cannot be made is logged and skipped: it must never hold back the report.

    Returns:
        The preview's path, or None when it could not be made.
    """
    finding = verdict.finding
    with ctx.sessions() as session:  # the model that made the result, not the one loaded now
        result = db.results.result_by_id(session=session, result_id=verdict.result_id)
        model = f"{result.model_name} {result.model_version}"
        session.commit()
    by_uid = {str(ds.SOPInstanceUID): ds for ds in inputs.datasets}
    top = [by_uid[uid] for uid in finding.key_slices if uid in by_uid]
    try:
        jpeg = render_preview(
            top or inputs.datasets[:1],
            PreviewText(
                headline=headline(finding.concept.short_name, suspected=finding.suspected),
                probability=finding.probability,
                threshold=finding.threshold,
                model=model,
                series=series_label(inputs.datasets[0]),
            ),
        )
        name = generate_uid(entropy_srcs=[inputs.fingerprint, ctx.classifier.sha256, "preview"])
        study = str(inputs.datasets[0].StudyInstanceUID)
        path = write_atomic(ctx.runtime.reports_dir / study / f"{name}.jpg", jpeg)
    except Exception:  # the SR matters more than its preview
        log.exception("Job %d: the preview could not be made", inputs.job_id)
        return None
    with ctx.sessions() as session:
        db.studies.set_preview_path(session=session, result_id=verdict.result_id, path=str(path))
        session.commit()
    log.info("Job %d: preview %s (%d bytes)", inputs.job_id, path.name, len(jpeg))
    return path


def headline(finding_name: str, *, suspected: bool) -> str:
    """``AI ICH TRIAGE: SUSPECTED``, as the report and the alert say it."""
    return f"AI {finding_name.upper()} TRIAGE: {'SUSPECTED' if suspected else 'NOT SUSPECTED'}"
