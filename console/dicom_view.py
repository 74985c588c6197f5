"""What the dashboard reads from stored DICOM files: header fields and images as PNG.

The database holds no patient data; the console reads it from the stored instance when asked,
and shows patient name and ID only to the admin scope.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.errors import InvalidDicomError

log = logging.getLogger(__name__)

_HEADER_TAGS = [
    "PatientName",
    "PatientID",
    "AccessionNumber",
    "StudyDate",
    "StationName",
    "InstanceNumber",
]


@dataclass(frozen=True)
class StudyHeader:
    """Header fields of a stored instance; the patient fields are None unless allowed."""

    accession_number: str | None
    study_date: str | None
    station_name: str | None
    patient_name: str | None = None
    patient_id: str | None = None


def _text(dataset: pydicom.Dataset, keyword: str) -> str | None:
    value = dataset.get(keyword)
    return None if value in (None, "") else str(value)


def display_name(person_name: str) -> str:
    """A DICOM Person Name as people write it: ``FAMILY^GIVEN^MIDDLE`` as "FAMILY, GIVEN MIDDLE".

    Only the first (alphabetic) component group is shown; empty components are left out.
    """
    alphabetic = person_name.split("=", 1)[0]
    family, _, rest = alphabetic.partition("^")
    others = " ".join(part for part in rest.split("^") if part.strip())
    if not others:
        return family.strip()
    return f"{family.strip()}, {others}" if family.strip() else others


def read_header(path: Path, *, with_patient: bool) -> StudyHeader | None:
    """Read a stored instance's header; None when the file is gone (purged) or unreadable."""
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except Exception as exc:  # gone, or damaged anywhere: pydicom raises many types for that
        log.info("Stored instance %s cannot be read: %s", path.name, type(exc).__name__)
        return None
    return StudyHeader(
        accession_number=_text(dataset, "AccessionNumber"),
        study_date=_text(dataset, "StudyDate"),
        station_name=_text(dataset, "StationName"),
        patient_name=_text(dataset, "PatientName") if with_patient else None,
        patient_id=_text(dataset, "PatientID") if with_patient else None,
    )


def instance_numbers(paths: list[Path]) -> list[int | None]:
    """Instance Number of each stored instance (None where missing or unreadable)."""
    numbers: list[int | None] = []
    for path in paths:
        try:
            dataset = pydicom.dcmread(
                path, stop_before_pixels=True, specific_tags=["InstanceNumber"]
            )
            value = dataset.get("InstanceNumber")
            numbers.append(None if value in (None, "") else int(value))
        except (OSError, InvalidDicomError, ValueError):
            numbers.append(None)
    return numbers


def frame_count(path: Path) -> int:
    """Number of frames of an image file (1 for a single-frame one)."""
    dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["NumberOfFrames"])
    return int(dataset.get("NumberOfFrames", 1) or 1)


def image_png(path: Path, *, frame: int = 0) -> bytes:
    """Render one frame of a stored image (e.g. the heat-map Secondary Capture) as PNG.

    Raises:
        OSError: The file is missing.
        InvalidDicomError: It is not DICOM.
        IndexError: No such frame.
    """
    dataset = pydicom.dcmread(path)
    pixels = np.asarray(dataset.pixel_array)
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[frame]
    elif frame != 0:
        raise IndexError(f"The image has one frame; frame {frame} does not exist.")
    if pixels.ndim == 2:
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels.astype(np.float64) - low) / ((high - low) or 1.0) * 255.0
        if str(dataset.get("PhotometricInterpretation", "")) == "MONOCHROME1":
            scaled = 255.0 - scaled
        image = Image.fromarray(scaled.astype(np.uint8), mode="L")
    else:
        image = Image.fromarray(pixels.astype(np.uint8), mode="RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
