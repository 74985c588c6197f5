"""The heat-map Secondary Capture: the most suspicious slices with the model's attention.

One RGB Secondary Capture holds a mosaic of the top slices, each with its heat map blended over
the windowed grayscale image. Burned in: a banner that says the image is not for diagnosis and
states the finding, the verdict, the probability, the threshold and the model version; on each
tile its rank, instance number, slice location in mm and the patient's left and right; below the
tiles a legend that explains them. It joins the patient and study of the CT series as a new
series.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Sequence
from datetime import datetime

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.sr.codedict import codes

from model.spec import STROKE, CodedFinding
from worker.errors import ReportError
from worker.report import decimals_for, source_header, verdict_text

logger = logging.getLogger(__name__)

MANUFACTURER = "stroke-triage project"
LEGEND = (
    "#1, #2, ...: the slices ranked by the model's suspicion (#1 most suspicious). "
    "IMG: instance number in the CT series. mm: slice location. "
    "R/L, A/P: the patient's right/left, anterior/posterior. "
    "Colour: where the model looked (red most, blue least); it is not an outline of a lesion."
)
"""Burned in below the tiles, so that the labels need no manual."""

TILE_SIZE = 384
"""Edge of one square tile of the mosaic, in pixels."""
LINE_HEIGHT = 20
"""Height of one line of burned-in text, in pixels (16 px font)."""
MARGIN = 6
"""Space around the burned-in text, in pixels."""
HEATMAP_OPACITY = 0.5
"""Opacity of the colour overlay where the heat map is 1; it fades to 0 with the heat."""
_SERIES_DESCRIPTION_LENGTH = 64
"""Series Description is an LO: at most 64 characters."""
_OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "H": "F", "F": "H"}

_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
FloatImage = npt.NDArray[np.floating]
RGBImage = npt.NDArray[np.uint8]


def build_heatmap_capture(
    *,
    source_datasets: Sequence[pydicom.Dataset],
    images: Sequence[FloatImage],
    heatmaps: Sequence[FloatImage],
    probability: float,
    suspected: bool,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int = 9002,
    threshold: float | None = None,
    finding: CodedFinding = STROKE,
    model_version: str | None = None,
) -> hd.sc.SCImage:
    """Builds the Secondary Capture that shows the heat maps of the top slices.

    Args:
        source_datasets: The top slices, most suspicious first (headers suffice).
        images: Their windowed images, 2-D, values in [0, 1], same order.
        heatmaps: Their heat maps, 2-D, values in [0, 1], any size; resized to each image.
        probability: Series-level probability of the finding, printed in the banner.
        suspected: The verdict, printed in the banner.
        series_instance_uid: UID of the new Secondary Capture series.
        sop_instance_uid: UID of the Secondary Capture instance.
        series_number: Series Number of the Secondary Capture series.
        threshold: The threshold the verdict was taken with, printed in the banner.
        finding: What the model detects, named in the banner and the series description.
        model_version: The model's version, printed in the banner.

    Returns:
        The Secondary Capture, 8-bit RGB, with burned-in annotation.

    Raises:
        ReportError: If the inputs are inconsistent or highdicom rejects them.
    """
    if not source_datasets or not len(source_datasets) == len(images) == len(heatmaps):
        raise ReportError(
            "The capture needs one image and one heat map for each of at least one slice."
        )
    tiles = [
        _overlay(_fit(_check_unit(image, "image")), _check_unit(heatmap, "heat map"))
        for image, heatmap in zip(images, heatmaps, strict=True)
    ]
    header = source_header(source_datasets[0])
    orientation = _patient_orientation(header)
    mosaic = _mosaic(
        tiles,
        [tile_label(rank, ds) for rank, ds in enumerate(source_datasets, start=1)],
        banner_lines(
            probability=probability,
            suspected=suspected,
            threshold=threshold,
            finding=finding,
            model_version=model_version,
        ),
        edge_markers(orientation),
    )
    now = datetime.now()
    try:
        capture = hd.sc.SCImage(
            pixel_array=mosaic,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            study_instance_uid=header.StudyInstanceUID,
            series_instance_uid=series_instance_uid,
            series_number=series_number,
            sop_instance_uid=sop_instance_uid,
            instance_number=1,
            manufacturer=MANUFACTURER,
            patient_id=header.PatientID,
            patient_name=header.PatientName,
            patient_birth_date=header.PatientBirthDate,
            patient_sex=header.PatientSex,
            accession_number=header.AccessionNumber,
            study_id=header.StudyID,
            study_date=header.StudyDate,
            study_time=header.StudyTime,
            referring_physician_name=header.ReferringPhysicianName,
            patient_orientation=orientation,
            transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
            series_description=series_description(suspected=suspected, finding=finding),
            content_date=now.date(),
            content_time=now.time(),
            # Series Date and Time (type 3) let a PACS file the new series beside the CT.
            series_date=now.date(),
            series_time=now.time(),
        )
    except (ValueError, TypeError) as error:
        raise ReportError(f"The heat-map capture could not be built: {error}.") from error
    capture.copy_patient_and_study_information(header)
    # Laterality (type 2C) is needed unless the body part is unpaired; the head is not paired.
    capture.BodyPartExamined = header.get("BodyPartExamined") or "HEAD"
    capture.BurnedInAnnotation = "YES"
    capture.RecognizableVisualFeatures = "NO"
    capture.LossyImageCompression = "00"
    capture.DerivationDescription = "Model heat maps blended over brain-windowed CT slices"
    capture.SourceImageSequence = [_source_reference(ds) for ds in source_datasets]
    logger.info(
        "Built heat-map capture %s from %d slices, %dx%d pixels",
        sop_instance_uid,
        len(tiles),
        mosaic.shape[1],
        mosaic.shape[0],
    )
    return capture


def series_description(*, suspected: bool, finding: CodedFinding = STROKE) -> str:
    """``AI ICH TRIAGE: SUSPECTED (HEATMAP, NOT FOR DIAGNOSIS)``, shortened to fit 64 characters."""
    verdict = verdict_text(suspected=suspected, finding=finding)
    for suffix in (" (HEATMAP, NOT FOR DIAGNOSIS)", " (HEATMAP)"):
        if len(verdict + suffix) <= _SERIES_DESCRIPTION_LENGTH:
            return verdict + suffix
    return verdict[:_SERIES_DESCRIPTION_LENGTH]


def banner_lines(
    *,
    probability: float,
    suspected: bool,
    threshold: float | None,
    finding: CodedFinding = STROKE,
    model_version: str | None = None,
) -> list[str]:
    """The banner's text: the warning, then the verdict with its numbers and the model."""
    name = finding.short_name.upper()
    places = 2 if threshold is None else decimals_for(probability=probability, threshold=threshold)
    numbers = [f"probability {probability:.{places}f}"]
    if threshold is not None:
        numbers.append(f"threshold {threshold:.{places}f}")
    if model_version:
        numbers.append(f"model {model_version}")
    return [
        f"NOT FOR DIAGNOSTIC USE - AI {name} TRIAGE, UNVERIFIED",
        f"{name} {'SUSPECTED' if suspected else 'NOT SUSPECTED'}: " + ", ".join(numbers),
    ]


def tile_label(rank: int, dataset: pydicom.Dataset) -> str:
    """``#1 IMG 16  42.5 mm``: rank by suspicion, instance number, slice location."""
    label = f"#{rank} IMG {dataset.get('InstanceNumber', '?')}"
    location = slice_location_mm(dataset)
    return label if location is None else f"{label}  {location:.1f} mm"


def slice_location_mm(dataset: pydicom.Dataset) -> float | None:
    """Slice Location, or else the z of Image Position (Patient); None when neither is there."""
    location = dataset.get("SliceLocation")
    if location is not None and str(location).strip():
        return float(location)
    position = dataset.get("ImagePositionPatient")
    if position is not None and len(position) == 3:
        return float(position[2])
    return None


def edge_markers(orientation: tuple[str, str]) -> tuple[str, str, str, str]:
    """The patient directions at a tile's left, right, top and bottom edges.

    Columns run towards ``orientation[0]`` and rows towards ``orientation[1]`` (Patient
    Orientation), so the right edge faces the first and the left edge its opposite: an axial
    slice in the usual radiological view has the patient's right (R) on the left.
    """
    towards_right, towards_bottom = (direction[0] for direction in orientation)
    return (_OPPOSITE[towards_right], towards_right, _OPPOSITE[towards_bottom], towards_bottom)


def _check_unit(array: FloatImage, what: str) -> FloatImage:
    if array.ndim != 2 or array.size == 0:
        raise ReportError(f"Each {what} must be a non-empty 2-D array, not shape {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise ReportError(f"A {what} holds values that are not finite.")
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def _fit(image: FloatImage) -> FloatImage:
    """Scales an image to fit a square tile, keeping its aspect ratio, padded with black."""
    rows, columns = image.shape
    scale = TILE_SIZE / max(rows, columns)
    size = (max(1, round(columns * scale)), max(1, round(rows * scale)))
    resized = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    tile = np.zeros((TILE_SIZE, TILE_SIZE), dtype=np.float32)
    top, left = (TILE_SIZE - size[1]) // 2, (TILE_SIZE - size[0]) // 2
    tile[top : top + size[1], left : left + size[0]] = resized
    return tile


def _jet(values: FloatImage) -> FloatImage:
    """Maps values in [0, 1] to a jet-like RGB colour map (blue, cyan, yellow, red)."""
    channels = [np.clip(1.5 - np.abs(4.0 * values - offset), 0.0, 1.0) for offset in (3, 2, 1)]
    return np.stack(channels, axis=-1)


def _overlay(tile: FloatImage, heatmap: FloatImage) -> RGBImage:
    """Blends a heat map, stretched to the tile, over a grayscale tile."""
    heat = _fit(heatmap)
    alpha = (HEATMAP_OPACITY * heat)[..., np.newaxis]
    gray = np.repeat(tile[..., np.newaxis], 3, axis=-1)
    blended = (1.0 - alpha) * gray + alpha * _jet(heat)
    return np.asarray(np.round(blended * 255.0), dtype=np.uint8)


def _mosaic(
    tiles: Sequence[RGBImage],
    labels: Sequence[str],
    banner: Sequence[str],
    markers: tuple[str, str, str, str],
) -> RGBImage:
    """Puts tiles side by side between a banner and a legend, and burns in every text."""
    font = ImageFont.load_default(size=16)
    width = TILE_SIZE * len(tiles)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    warning = _wrap(banner[:1], width, font, measure)
    top = warning + _wrap(banner[1:], width, font, measure)
    bottom = _wrap([LEGEND], width, font, measure)
    top_height = 2 * MARGIN + LINE_HEIGHT * len(top)
    canvas = Image.new(
        "RGB", (width, top_height + TILE_SIZE + 2 * MARGIN + LINE_HEIGHT * len(bottom))
    )
    draw = ImageDraw.Draw(canvas)
    for index, (tile, label) in enumerate(zip(tiles, labels, strict=True)):
        left = index * TILE_SIZE
        canvas.paste(Image.fromarray(tile), (left, top_height))
        _outlined(draw, (left + 4, top_height + 4), label, font)
        left_marker, right_marker, top_marker, bottom_marker = markers
        middle = top_height + TILE_SIZE // 2 - LINE_HEIGHT // 2
        centre = left + TILE_SIZE // 2 - 4
        _outlined(draw, (left + 4, middle), left_marker, font)
        _outlined(draw, (left + TILE_SIZE - 16, middle), right_marker, font)
        _outlined(draw, (centre, top_height + 4 + LINE_HEIGHT), top_marker, font)
        _outlined(draw, (centre, top_height + TILE_SIZE - LINE_HEIGHT - 2), bottom_marker, font)
    for number, line in enumerate(top):
        colour = "yellow" if number < len(warning) else "white"
        draw.text((MARGIN, MARGIN + number * LINE_HEIGHT), line, fill=colour, font=font)
    legend_top = top_height + TILE_SIZE + MARGIN
    for number, line in enumerate(bottom):
        draw.text((MARGIN, legend_top + number * LINE_HEIGHT), line, fill="white", font=font)
    return np.asarray(canvas, dtype=np.uint8)


def _outlined(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, font: _Font) -> None:
    """White text with a black outline, legible over any part of the image."""
    draw.text(xy, text, fill="white", font=font, stroke_width=2, stroke_fill="black")


def _wrap(
    paragraphs: Sequence[str],
    width: int,
    font: _Font,
    draw: ImageDraw.ImageDraw,
) -> list[str]:
    """The paragraphs broken into lines that fit ``width`` pixels (less the margins)."""
    lines: list[str] = []
    for paragraph in paragraphs:
        for columns in range(len(paragraph), 0, -1):
            wrapped = textwrap.wrap(paragraph, columns)
            if all(draw.textlength(line, font=font) <= width - 2 * MARGIN for line in wrapped):
                lines += wrapped
                break
    return lines


def _patient_orientation(header: pydicom.Dataset) -> tuple[str, str]:
    """Returns the patient directions of the rows and columns of the source slices.

    Each tile keeps the orientation of its slice; the main direction of Image Orientation
    (Patient) names it. Axial slices without that attribute default to L, P.
    """
    orientation = header.get("ImageOrientationPatient")
    if orientation is None or len(orientation) != 6:
        return ("L", "P")
    letters = (("L", "R"), ("P", "A"), ("H", "F"))

    def direction(vector: Sequence[float]) -> str:
        axis = int(np.argmax(np.abs(vector)))
        return letters[axis][0] if vector[axis] > 0 else letters[axis][1]

    values = [float(value) for value in orientation]
    return (direction(values[:3]), direction(values[3:]))


def _source_reference(dataset: pydicom.Dataset) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item.ReferencedSOPClassUID = dataset.SOPClassUID
    item.ReferencedSOPInstanceUID = dataset.SOPInstanceUID
    item.PurposeOfReferenceCodeSequence = [
        hd.sr.CodedConcept.from_code(codes.DCM.SourceImageForImageProcessingOperation)
    ]
    return item
