"""DICOM decoding: a CT dataset to Hounsfield units, and the slices of a series in order.

The vendor and codec quirks live here, so that ``model.pixels`` only ever sees numpy arrays.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import pydicom
from pydicom.pixels.utils import pixel_array
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
)

from model.errors import PreprocessError

logger = logging.getLogger(__name__)

CT_STORAGE_CLASSES = frozenset(
    {CTImageStorage, EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage}
)

AIR_HU = -1024.0
"""The lowest meaningful CT number; padding and values below it become this."""


def dataset_to_hu(ds: pydicom.Dataset) -> np.ndarray:
    """Decode one CT image into Hounsfield units.

    Args:
        ds: A CT image dataset already read into memory, possibly compressed.

    Returns:
        A float32 ``(rows, columns)`` array in HU; padding and anything below -1024 is -1024.

    Raises:
        PreprocessError: If the dataset is not a single-frame, single-sample CT image, its
            pixel data cannot be decoded, or it lacks Rescale Slope or Intercept.
    """
    modality = ds.get("Modality")
    if modality != "CT":
        raise PreprocessError(f"Expected a CT image but the dataset's Modality is {modality!r}.")
    sop_class = ds.get("SOPClassUID")
    if sop_class is not None and sop_class not in CT_STORAGE_CLASSES:
        # Scanners send screenshots and dose reports as Secondary Capture with Modality CT.
        raise PreprocessError(
            f"Expected a CT image but the SOP class is {getattr(sop_class, 'name', sop_class)}."
        )
    if "PixelData" not in ds:
        raise PreprocessError("The CT dataset has no Pixel Data element.")
    samples = int(ds.get("SamplesPerPixel", 1))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if samples != 1 or frames != 1:
        raise PreprocessError(
            f"Expected a single-frame grayscale image but found {frames} frame(s) "
            f"with {samples} sample(s) per pixel."
        )
    try:
        # JPEG 2000 codestreams sometimes declare a signedness that disagrees with Pixel
        # Representation (J2K_pixelrep_mismatch.dcm: unsigned 13-bit codestream, signed
        # dataset). The sign corrections re-extend the sign bit from the stored precision;
        # JPEG-LS cannot record signedness at all and needs the same fix.
        raw = pixel_array(ds, apply_j2k_sign_correction=True, apply_jls_sign_correction=True)
    except Exception as exc:  # decoders raise many unrelated exception types
        raise PreprocessError(
            f"Could not decode the pixel data of SOP instance {ds.get('SOPInstanceUID', '?')} "
            f"(transfer syntax {_transfer_syntax_name(ds)}): {exc}"
        ) from exc
    if raw.ndim != 2:
        raise PreprocessError(f"Expected a 2-D frame but decoded an array of shape {raw.shape}.")

    slope, intercept = rescale(ds)
    hu = raw.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    padding = _padding_mask(ds, raw)
    if padding is not None:
        hu[padding] = AIR_HU
    # Values below air are vendor padding outside the field of view (GE writes -2000 raw
    # without declaring it) or lossy-compression ringing around such padding.
    np.maximum(hu, np.float32(AIR_HU), out=hu)
    return hu


def rescale(ds: pydicom.Dataset) -> tuple[float, float]:
    """The Rescale Slope and Intercept that turn stored values into HU.

    Both are Type 1 in the CT Image module (in the Pixel Value Transformation functional group
    of enhanced CT). Without them the stored values are not HU, and reading them as if they
    were changes every score, so a missing or unusable value is an error, never a default.

    Raises:
        PreprocessError: If either is missing, not a number, or the slope is zero.
    """
    source = ds if "RescaleSlope" in ds or "RescaleIntercept" in ds else _transformation(ds)
    uid = ds.get("SOPInstanceUID", "?")
    values: list[float] = []
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        value = None if source is None else source.get(keyword)
        try:
            number = float(value) if value not in (None, "") else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise PreprocessError(
                f"SOP instance {uid} has no usable {keyword} ({value!r}); it is Type 1 in the "
                "CT Image module, and without it the stored values cannot be read as HU."
            )
        values.append(number)
    if values[0] == 0:
        raise PreprocessError(f"SOP instance {uid} has a Rescale Slope of 0.")
    return values[0], values[1]


def _transformation(ds: pydicom.Dataset) -> pydicom.Dataset | None:
    """The Pixel Value Transformation item of an enhanced CT object (shared, else frame 1)."""
    for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = ds.get(keyword)
        try:
            item: pydicom.Dataset = groups[0].PixelValueTransformationSequence[0]
        except (TypeError, IndexError, AttributeError):
            continue
        return item
    return None


def _transfer_syntax_name(ds: pydicom.Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return str(uid.name) if uid is not None else "unknown"


def _padding_mask(ds: pydicom.Dataset, raw: np.ndarray) -> np.ndarray | None:
    """Pixels marked by Pixel Padding Value (and Range Limit), compared with stored values."""
    value = ds.get("PixelPaddingValue")
    if value is None or isinstance(value, bytes):
        return None
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    bounds = [_as_stored(int(value), signed=signed)]
    limit = ds.get("PixelPaddingRangeLimit")
    if limit is not None and not isinstance(limit, bytes):
        bounds.append(_as_stored(int(limit), signed=signed))
    return (raw >= min(bounds)) & (raw <= max(bounds))


def _as_stored(value: int, *, signed: bool) -> int:
    # Padding values of signed images are sometimes written with VR US (e.g. 63536 for -2000).
    if signed and value > 32767:
        return value - 65536
    return value


def sort_slices(
    datasets: Sequence[pydicom.Dataset], *, positions: Sequence[float] | None = None
) -> list[int]:
    """Order axial slices along the slice normal, from the lowest position up.

    Uses ImagePositionPatient projected on the normal of ImageOrientationPatient; when any slice
    lacks them, falls back to InstanceNumber (then to the input order).

    Args:
        datasets: The slices of one series, in any order.
        positions: Their positions along the normal, when already computed.

    Returns:
        Indices into ``datasets`` in sorted order.
    """
    positions = positions if positions is not None else _normal_positions(datasets)
    if positions is not None:
        return sorted(range(len(datasets)), key=lambda i: (positions[i], i))
    logger.info("Sorting %d slices by InstanceNumber: image position is missing", len(datasets))

    def instance_number(i: int) -> tuple[int, int]:
        value = datasets[i].get("InstanceNumber")
        return (int(value) if value not in (None, "") else 2**31, i)

    return sorted(range(len(datasets)), key=instance_number)


def _normal_positions(datasets: Sequence[pydicom.Dataset]) -> list[float] | None:
    positions: list[float] = []
    normal: np.ndarray | None = None
    for ds in datasets:
        ipp = ds.get("ImagePositionPatient")
        iop = ds.get("ImageOrientationPatient")
        if not ipp or not iop or len(ipp) != 3 or len(iop) != 6:
            return None
        if normal is None:
            # One normal for the whole series, so every slice is measured along the same axis.
            normal = np.cross([float(v) for v in iop[:3]], [float(v) for v in iop[3:]])
        positions.append(float(np.dot(normal, [float(v) for v in ipp])))
    return positions


class SortedSeries:
    """The slices of one series in sorted order, decoded to HU on demand.

    Decoding is lazy so that a long series never sits in memory whole; every slice must have
    the size of the first one decoded.
    """

    def __init__(self, datasets: Sequence[pydicom.Dataset]) -> None:
        """Sort ``datasets`` (any order, with pixel data) along the slice normal."""
        self.datasets = datasets
        positions = _normal_positions(datasets)
        self.order = sort_slices(datasets, positions=positions)
        """Input indices in sorted order (lowest position first)."""
        self.positions = None if positions is None else [positions[i] for i in self.order]
        """Positions along the slice normal in mm, in sorted order; None when a slice lacks
        Image Position or Orientation (then sorted by Instance Number)."""
        self._shape: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.order)

    def hu(self, lo: int, hi: int) -> np.ndarray:
        """HU of the sorted slices ``lo`` to ``hi`` (exclusive): ``(hi - lo, H, W)`` float32.

        Raises:
            PreprocessError: If a slice cannot be decoded or differs in size from the others.
        """
        slices = [dataset_to_hu(self.datasets[i]) for i in self.order[lo:hi]]
        for hu in slices:
            self._shape = self._shape or hu.shape
            if hu.shape != self._shape:
                raise PreprocessError(
                    f"All slices of a series must have one size; found {self._shape} and "
                    f"{hu.shape}."
                )
        return np.stack(slices)
