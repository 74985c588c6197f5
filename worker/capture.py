"""The heat-map Secondary Capture: the most suspicious slices with the model's attention.

One RGB Secondary Capture holds a mosaic of the top slices, each with its heat map blended over
the windowed grayscale image, below a burned-in banner that says the image is not for diagnosis
and states the verdict. It joins the patient and study of the CT series as a new series.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.sr.codedict import codes

from worker.errors import ReportError
from worker.report import source_header

logger = logging.getLogger(__name__)

BANNER_TEXT = "NOT FOR DIAGNOSTIC USE - AI STROKE TRIAGE"
SERIES_DESCRIPTION = "AI STROKE TRIAGE HEATMAP (NOT FOR DIAGNOSTIC USE)"
MANUFACTURER = "stroke-triage project"

TILE_SIZE = 384
"""Edge of one square tile of the mosaic, in pixels."""
BANNER_HEIGHT = 48
"""Height of the banner strip above the tiles, in pixels."""
HEATMAP_OPACITY = 0.5
"""Opacity of the colour overlay where the heat map is 1; it fades to 0 with the heat."""

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
) -> hd.sc.SCImage:
    """Builds the Secondary Capture that shows the heat maps of the top slices.

    Args:
        source_datasets: The top slices, most suspicious first (headers suffice).
        images: Their windowed images, 2-D, values in [0, 1], same order.
        heatmaps: Their heat maps, 2-D, values in [0, 1], any size; resized to each image.
        probability: Series-level stroke probability, printed in the banner.
        suspected: The verdict, printed in the banner.
        series_instance_uid: UID of the new Secondary Capture series.
        sop_instance_uid: UID of the Secondary Capture instance.
        series_number: Series Number of the Secondary Capture series.

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
    labels = [
        f"#{index + 1} IMG {ds.get('InstanceNumber', '?')}"
        for index, ds in enumerate(source_datasets)
    ]
    verdict = "SUSPECTED" if suspected else "NOT SUSPECTED"
    mosaic = _mosaic(tiles, labels, f"STROKE {verdict}  p={probability:.2f}")
    header = source_header(source_datasets[0])
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
            patient_orientation=_patient_orientation(header),
            transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
            series_description=SERIES_DESCRIPTION,
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


def _mosaic(tiles: Sequence[RGBImage], labels: Sequence[str], verdict: str) -> RGBImage:
    """Puts tiles side by side below a banner, and burns in the banner and tile labels."""
    canvas = Image.new("RGB", (TILE_SIZE * len(tiles), BANNER_HEIGHT + TILE_SIZE))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=16)
    for index, (tile, label) in enumerate(zip(tiles, labels, strict=True)):
        canvas.paste(Image.fromarray(tile), (index * TILE_SIZE, BANNER_HEIGHT))
        draw.text((index * TILE_SIZE + 4, BANNER_HEIGHT + 4), label, fill="white", font=font)
    draw.text((6, 4), BANNER_TEXT, fill="yellow", font=font)
    draw.text((6, 4 + BANNER_HEIGHT // 2), verdict, fill="white", font=font)
    return np.asarray(canvas, dtype=np.uint8)


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
