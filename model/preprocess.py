"""Pixel preprocessing: HU conversion, CT windowing, channel stacking, resizing.

Every function here is numpy in, numpy out and does no I/O, so training and inference run the
very same code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np
import pydicom
import torch
from pydicom.pixels.utils import pixel_array
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
)

from model.errors import PreprocessError
from model.symmetry import midline_transform, mirror_channels

if TYPE_CHECKING:
    from model.spec import ModelSpec

logger = logging.getLogger(__name__)

CT_STORAGE_CLASSES = frozenset(
    {CTImageStorage, EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage}
)

AIR_HU = -1024.0
"""The lowest meaningful CT number; padding and values below it become this."""


@dataclass(frozen=True)
class Window:
    """A CT display window in Hounsfield units."""

    center: float
    width: float


WINDOW_PRESETS: dict[str, Window] = {
    "brain": Window(center=40.0, width=80.0),
    "stroke": Window(center=40.0, width=40.0),
    "stroke_narrow": Window(center=32.0, width=8.0),
    "subdural": Window(center=80.0, width=200.0),
    "bone": Window(center=600.0, width=2800.0),
}


class ChannelMode(StrEnum):
    """How the three input channels of the network are filled."""

    REPLICATE = "replicate"
    """One window, copied into all three channels."""
    MULTI_WINDOW = "multi_window"
    """Three windows of the same slice, one per channel."""
    ADJACENT = "adjacent"
    """Slices k-1, k, k+1 of the sorted stack under one window; edges repeat the edge slice."""
    MIRROR = "mirror"
    """One window, aligned on the midline: the slice, its mirror image, their difference.

    The slice is first resized to the input size, then aligned (``model.symmetry``)."""


def dataset_to_hu(ds: pydicom.Dataset) -> np.ndarray:
    """Decode one CT image into Hounsfield units.

    Args:
        ds: A CT image dataset already read into memory, possibly compressed.

    Returns:
        A float32 ``(rows, columns)`` array in HU; padding and anything below -1024 is -1024.

    Raises:
        PreprocessError: If the dataset is not a single-frame, single-sample CT image or its
            pixel data cannot be decoded.
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

    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    hu = raw.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    padding = _padding_mask(ds, raw)
    if padding is not None:
        hu[padding] = AIR_HU
    # Values below air are vendor padding outside the field of view (GE writes -2000 raw
    # without declaring it) or lossy-compression ringing around such padding.
    np.maximum(hu, np.float32(AIR_HU), out=hu)
    return hu


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


def apply_window(hu: np.ndarray, window: Window) -> np.ndarray:
    """Map HU linearly to [0, 1]: ``center - width/2`` to 0, ``center + width/2`` to 1, clipped.

    Args:
        hu: Any array of HU values.
        window: The window.

    Returns:
        A float32 array of the same shape.
    """
    if window.width <= 0:
        raise PreprocessError(f"A window width must be positive, got {window.width}.")
    low = window.center - window.width / 2.0
    out = (np.asarray(hu, dtype=np.float32) - np.float32(low)) / np.float32(window.width)
    clipped: np.ndarray = np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)
    return clipped


def _adjacent_channels(stack: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` to ``(N, 3, H, W)`` with slices k-1, k, k+1; edges repeat."""
    previous = np.concatenate([stack[:1], stack[:-1]], axis=0)
    following = np.concatenate([stack[1:], stack[-1:]], axis=0)
    return np.stack([previous, stack, following], axis=1)


def _check_stack(x: np.ndarray, ndim: int, what: str) -> None:
    if x.ndim != ndim:
        raise PreprocessError(f"Expected {what} with {ndim} dimensions, got shape {x.shape}.")
    if x.shape[0] == 0:
        raise PreprocessError(f"Expected at least one slice in {what}, got none.")


def hu_stack_to_channels(
    hu: np.ndarray, *, windows: Sequence[Window], mode: ChannelMode
) -> np.ndarray:
    """Window a sorted HU stack into three-channel images.

    Args:
        hu: ``(N, H, W)`` HU, slices sorted along the patient axis.
        windows: Three windows for ``MULTI_WINDOW``, one otherwise.
        mode: How channels are filled.

    Returns:
        ``(N, 3, H, W)`` float32 in [0, 1].
    """
    _check_stack(hu, 3, "an HU stack (N, H, W)")
    mode = ChannelMode(mode)
    expected = 3 if mode is ChannelMode.MULTI_WINDOW else 1
    if len(windows) != expected:
        raise PreprocessError(
            f"Channel mode {mode.value!r} needs exactly {expected} window(s), got {len(windows)}."
        )
    if mode is ChannelMode.MULTI_WINDOW:
        return np.stack([apply_window(hu, w) for w in windows], axis=1)
    windowed = apply_window(hu, windows[0])
    if mode is ChannelMode.REPLICATE:
        return np.repeat(windowed[:, None], 3, axis=1)
    if mode is ChannelMode.MIRROR:
        if windowed.shape[1] != windowed.shape[2]:
            raise PreprocessError(
                f"Mirror channels need square slices, got {windowed.shape[1:]}; "
                "preprocess_hu_stack resizes them first."
            )
        return mirror_channels(windowed)
    return _adjacent_channels(windowed)


def resize_batch(x: np.ndarray, size: int) -> np.ndarray:
    """Resize ``(N, C, H, W)`` images to ``(N, C, size, size)``.

    Bilinear with antialiasing (torch), so downscaling averages instead of aliasing.

    Args:
        x: The images.
        size: The output side length in pixels.

    Returns:
        A float32 array.
    """
    _check_stack(x, 4, "an image batch (N, C, H, W)")
    if size < 1:
        raise PreprocessError(f"The output size must be positive, got {size}.")
    batch = np.ascontiguousarray(x, dtype=np.float32)
    if batch.shape[2] == size and batch.shape[3] == size:
        return batch.copy()
    tensor = torch.from_numpy(batch)
    with torch.inference_mode():
        out = torch.nn.functional.interpolate(
            tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    return np.ascontiguousarray(out.numpy(), dtype=np.float32)


def normalize(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Subtract a per-channel mean and divide by a per-channel std.

    Args:
        x: ``(N, C, H, W)`` images.
        mean: ``C`` means.
        std: ``C`` standard deviations, all positive.

    Returns:
        A float32 array of the same shape.
    """
    _check_stack(x, 4, "an image batch (N, C, H, W)")
    mean_arr = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std_arr = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    if mean_arr.shape[1] != x.shape[1] or std_arr.shape[1] != x.shape[1]:
        raise PreprocessError(
            f"Got {mean_arr.shape[1]} means and {std_arr.shape[1]} stds for {x.shape[1]} channels."
        )
    if np.any(std_arr <= 0):
        raise PreprocessError("Every normalisation std must be positive.")
    return ((np.asarray(x, dtype=np.float32) - mean_arr) / std_arr).astype(np.float32, copy=False)


def _finish(channels: np.ndarray, spec: ModelSpec) -> np.ndarray:
    resized = resize_batch(channels, spec.input_size)
    return normalize(resized, spec.mean, spec.std)


def _finish_mirror(windowed: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Mirror mode resizes before it aligns, so JPEG and HU inputs take the same path."""
    resized = resize_batch(windowed[:, None], spec.input_size)[:, 0]
    return normalize(mirror_channels(resized), spec.mean, spec.std)


def input_alignment(hu: np.ndarray, spec: ModelSpec) -> np.ndarray | None:
    """How the network's input frame maps onto one HU slice.

    Args:
        hu: ``(H, W)`` HU of one square slice.
        spec: The model's spec.

    Returns:
        Mirror mode: the ``(2, 3)`` map from input to slice coordinates that
        :func:`preprocess_hu_stack` applied (``model.symmetry.midline_transform``). Other modes,
        or no head found: None, the input frame is the slice's own.
    """
    if ChannelMode(spec.channel_mode) is not ChannelMode.MIRROR:
        return None
    windowed = apply_window(hu, spec.window_objects()[0])
    return midline_transform(resize_batch(windowed[None, None], spec.input_size)[0, 0])


def preprocess_hu_stack(hu: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Turn a sorted HU stack into network input as the spec describes.

    Args:
        hu: ``(N, H, W)`` HU, slices sorted along the patient axis.
        spec: The model's spec (windows, channel mode, input size, mean, std).

    Returns:
        ``(N, 3, S, S)`` float32.
    """
    if ChannelMode(spec.channel_mode) is ChannelMode.MIRROR:
        _check_stack(hu, 3, "an HU stack (N, H, W)")
        return _finish_mirror(apply_window(hu, spec.window_objects()[0]), spec)
    channels = hu_stack_to_channels(hu, windows=spec.window_objects(), mode=spec.channel_mode)
    return _finish(channels, spec)


def preprocess_windowed_uint8(images: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Turn already brain-windowed 8-bit slices (the Kaggle JPEGs) into network input.

    ``value / 255`` stands in for the image windowed with the spec's first window, which must
    be the one that produced the JPEGs for inference on HU to match. In ``multi_window`` mode
    the other windows are cut out of that one (8-bit values back to HU, then windowed again),
    so they must lie inside it: a narrow stroke window inside a wider brain window.

    Args:
        images: ``(N, H, W)`` uint8, slices sorted along the patient axis.
        spec: The model's spec.

    Returns:
        ``(N, 3, S, S)`` float32.
    """
    _check_stack(images, 3, "an 8-bit image stack (N, H, W)")
    if images.dtype != np.uint8:
        raise PreprocessError(f"Expected uint8 images, got dtype {images.dtype}.")
    mode = ChannelMode(spec.channel_mode)
    unit = images.astype(np.float32) / np.float32(255.0)
    if mode is ChannelMode.MULTI_WINDOW:
        return _finish(_rewindow(unit, spec.window_objects()), spec)
    if mode is ChannelMode.MIRROR:
        return _finish_mirror(unit, spec)
    if mode is ChannelMode.REPLICATE:
        channels = np.repeat(unit[:, None], 3, axis=1)
    else:
        channels = _adjacent_channels(unit)
    return _finish(channels, spec)


def _rewindow(unit: np.ndarray, windows: Sequence[Window]) -> np.ndarray:
    """Windows cut out of an image already windowed with ``windows[0]``: ``(N, 3, H, W)``."""
    source = windows[0]
    low, high = source.center - source.width / 2.0, source.center + source.width / 2.0
    for window in windows[1:]:
        if window.center - window.width / 2.0 < low or window.center + window.width / 2.0 > high:
            raise PreprocessError(
                f"An 8-bit image windowed at {source.center:g}/{source.width:g} HU holds nothing "
                f"outside [{low:g}, {high:g}] HU, so the window {window.center:g}/"
                f"{window.width:g} cannot be cut out of it."
            )
    hu = np.float32(low) + unit * np.float32(source.width)
    return np.stack([apply_window(hu, window) for window in windows], axis=1)


def sort_slices(datasets: Sequence[pydicom.Dataset]) -> list[int]:
    """Order axial slices along the slice normal, from the lowest position up.

    Uses ImagePositionPatient projected on the normal of ImageOrientationPatient; when any slice
    lacks them, falls back to InstanceNumber (then to the input order).

    Args:
        datasets: The slices of one series, in any order.

    Returns:
        Indices into ``datasets`` in sorted order.
    """
    positions = _normal_positions(datasets)
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
