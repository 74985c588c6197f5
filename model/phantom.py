"""A synthetic head CT phantom, in HU and as a valid DICOM CT series.

It is not anatomy: it gives the pipeline realistic numbers (air, skull, brain, CSF, an optional
lesion) without any patient data.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

logger = logging.getLogger(__name__)

AIR_HU = -1000.0
BONE_HU = 1000.0
SCALP_HU = 20.0
GREY_MATTER_HU = 38.0
WHITE_MATTER_HU = 30.0
CSF_HU = 5.0
INFARCT_HU = 15.0
HAEMORRHAGE_HU = 65.0
NOISE_SD_HU = 2.0
PIXEL_SPACING_MM = 0.9
RESCALE_INTERCEPT = -1024


class Lesion(StrEnum):
    """A lesion the phantom can contain."""

    INFARCT = "infarct"
    """Hypodense wedge (~15 HU) in the right hemisphere over several slices."""
    HAEMORRHAGE = "haemorrhage"
    """Hyperdense blob (~65 HU) in the left hemisphere."""


def _head_scale(z: float) -> float:
    """Head size along z in [0, 1] (skull base to vertex): smaller at both ends."""
    return float(np.sqrt(max(0.0, 1.0 - ((z - 0.4) / 0.75) ** 2)))


def infarct_slices(n_slices: int) -> range:
    """Slice indices that hold the infarct wedge."""
    return range(int(0.35 * n_slices), max(int(0.35 * n_slices) + 1, int(0.65 * n_slices)))


def head_phantom_hu(
    *, n_slices: int = 24, size: int = 256, lesion: Lesion | None = None, seed: int = 0
) -> np.ndarray:
    """Make a head phantom volume in HU, slice 0 at the skull base.

    Args:
        n_slices: Number of axial slices.
        size: Rows and columns of each slice.
        lesion: Optional lesion to add.
        seed: Seed of the tissue noise.

    Returns:
        ``(n_slices, size, size)`` float32 HU.
    """
    if n_slices < 1 or size < 16:
        raise ValueError(f"Need n_slices >= 1 and size >= 16, got {n_slices} and {size}.")
    coords = (np.arange(size, dtype=np.float32) - (size - 1) / 2.0) / (size / 2.0)
    y, x = np.meshgrid(coords, coords, indexing="ij")
    volume = np.full((n_slices, size, size), AIR_HU, dtype=np.float32)
    for k in range(n_slices):
        z = (k + 0.5) / n_slices
        scale = _head_scale(z)
        a, b = 0.72 * scale, 0.88 * scale  # semi-axes: left-right, anterior-posterior
        if a < 0.08:
            continue
        r = np.sqrt((x / a) ** 2 + (y / b) ** 2)
        skin = 0.04 / a
        skull_outer = 1.0 - skin
        skull_inner = skull_outer - 0.07 / a
        brain = r < skull_inner
        image = volume[k]
        image[r < 1.0] = SCALP_HU
        image[(r < skull_outer) & ~brain] = BONE_HU
        image[brain] = np.where(r[brain] > skull_inner - 0.12, GREY_MATTER_HU, WHITE_MATTER_HU)
        if 0.3 < z < 0.7:
            for side in (-1.0, 1.0):
                ventricle = ((x - side * 0.09 * scale) / 0.06) ** 2 + (y / (0.25 * scale)) ** 2
                image[(ventricle < 1.0) & brain] = CSF_HU
        # Separate streams per slice and for the lesion, so a lesion changes only its pixels.
        rng = np.random.default_rng([seed, k])
        lesion_rng = np.random.default_rng([seed, k, 1])
        image[brain] += rng.normal(0.0, NOISE_SD_HU, size=int(brain.sum())).astype(np.float32)
        if lesion is Lesion.INFARCT and k in infarct_slices(n_slices):
            # Wedge in the right hemisphere (image left), a vascular territory from the centre.
            angle = np.arctan2(y, -x)
            wedge = brain & (np.abs(angle - 0.3) < 0.45) & (r > 0.25) & (r < skull_inner)
            image[wedge] = INFARCT_HU + lesion_rng.normal(0.0, NOISE_SD_HU, int(wedge.sum()))
        if lesion is Lesion.HAEMORRHAGE:
            centre_k = n_slices // 2
            dz = (k - centre_k) / max(1.0, n_slices / 8.0)
            radius2 = ((x - 0.3 * scale) ** 2 + (y + 0.15 * scale) ** 2) / 0.12**2 + dz**2
            blob = brain & (radius2 < 1.0)
            image[blob] = HAEMORRHAGE_HU + lesion_rng.normal(0.0, NOISE_SD_HU, int(blob.sum()))
    return volume


def write_phantom_series(
    directory: Path,
    *,
    n_slices: int = 24,
    size: int = 256,
    lesion: Lesion | None = None,
    seed: int = 0,
    study_instance_uid: str | None = None,
    slice_thickness_mm: float = 5.0,
) -> list[Path]:
    """Write the phantom as a CT Image Storage series (``CT000001.dcm``, ...).

    Args:
        directory: Created if missing.
        n_slices: Number of axial slices.
        size: Rows and columns.
        lesion: Optional lesion.
        seed: Seed of the tissue noise.
        study_instance_uid: Put the series in this study; a new one by default.
        slice_thickness_mm: Slice thickness and spacing.

    Returns:
        The written paths, slice 0 (skull base) first.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    volume = head_phantom_hu(n_slices=n_slices, size=size, lesion=lesion, seed=seed)
    stored = np.clip(np.rint(volume) - RESCALE_INTERCEPT, -32768, 32767).astype(np.int16)
    study_uid = study_instance_uid or generate_uid()
    series_uid = generate_uid()
    frame_uid = generate_uid()
    now = datetime.now(UTC)
    date, time_ = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    origin = -(size - 1) / 2.0 * PIXEL_SPACING_MM
    paths: list[Path] = []
    for k in range(n_slices):
        z = k * slice_thickness_mm
        ds = _slice_dataset(
            pixels=stored[k],
            instance_number=k + 1,
            position=(origin, origin, z),
            study_uid=study_uid,
            series_uid=series_uid,
            frame_uid=frame_uid,
            date=date,
            time_=time_,
            slice_thickness_mm=slice_thickness_mm,
            lesion=lesion,
        )
        path = directory / f"CT{k + 1:06d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    logger.info("Wrote %d-slice phantom series %s to %s", n_slices, series_uid, directory)
    return paths


def _slice_dataset(
    *,
    pixels: np.ndarray,
    instance_number: int,
    position: tuple[float, float, float],
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    date: str,
    time_: str,
    slice_thickness_mm: float,
    lesion: Lesion | None,
) -> Dataset:
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time_
    # Patient
    ds.PatientName = "PHANTOM^HEAD"
    ds.PatientID = "PHANTOM"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    # General Study
    ds.StudyInstanceUID = study_uid
    ds.StudyDate, ds.StudyTime = date, time_
    ds.ReferringPhysicianName = ""
    ds.StudyID = "PHANTOM"
    ds.AccessionNumber = ""
    ds.StudyDescription = "HEAD"
    # General Series
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.SeriesDescription = f"Synthetic head phantom ({lesion.value if lesion else 'normal'})"
    ds.BodyPartExamined = "HEAD"
    ds.PatientPosition = "HFS"
    ds.SeriesDate, ds.SeriesTime = date, time_
    # Frame of Reference
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    # General Equipment
    ds.Manufacturer = "stroke-triage"
    ds.ManufacturerModelName = "synthetic head phantom"
    ds.SoftwareVersions = "1"
    # General Image / General Acquisition
    ds.InstanceNumber = instance_number
    ds.AcquisitionNumber = 1
    ds.ContentDate, ds.ContentTime = date, time_
    ds.AcquisitionDate, ds.AcquisitionTime = date, time_
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageComments = "Synthetic phantom, not patient data"
    ds.BurnedInAnnotation = "NO"
    # Image Plane
    ds.PixelSpacing = [PIXEL_SPACING_MM, PIXEL_SPACING_MM]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [f"{v:.3f}" for v in position]
    ds.SliceThickness = slice_thickness_mm
    ds.SliceLocation = f"{position[2]:.3f}"
    # Image Pixel + CT Image
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = RESCALE_INTERCEPT
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.KVP = 120
    ds.WindowCenter = 40
    ds.WindowWidth = 80
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
    return ds
