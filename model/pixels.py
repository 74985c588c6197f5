"""Pure pixel functions: CT windowing, channel stacking, resizing, normalisation.

numpy in, numpy out, no I/O (torch only resamples), so training (8-bit JPEGs) and inference
(HU from ``model.dicom``) run the very same code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from model.errors import PreprocessError
from model.spec import ChannelMode, ModelSpec, Window
from model.symmetry import midline_transform, mirror_channels


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


def _check_windows(hu: np.ndarray, windows: Sequence[Window], mode: ChannelMode) -> ChannelMode:
    _check_stack(hu, 3, "an HU stack (N, H, W)")
    expected = 3 if mode is ChannelMode.MULTI_WINDOW else 1
    if len(windows) != expected:
        raise PreprocessError(
            f"Channel mode {mode.value!r} needs exactly {expected} window(s), got {len(windows)}."
        )
    return mode


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
    mode = _check_windows(hu, windows, ChannelMode(mode))
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


def _finish_replicate(windowed: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Replicate mode resizes one channel and reads it three times (a view, not a copy).

    Resizing works on each channel alone and normalising element by element, so the result is
    bit for bit that of :func:`_finish` on three copies, for a third of the resizing work.
    """
    resized = resize_batch(windowed[:, None], spec.input_size)
    replicated = np.broadcast_to(resized, (resized.shape[0], 3, *resized.shape[2:]))
    return normalize(replicated, spec.mean, spec.std)


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
    if ChannelMode(spec.channel_mode) is ChannelMode.REPLICATE:
        windows = spec.window_objects()
        _check_windows(hu, windows, ChannelMode.REPLICATE)
        return _finish_replicate(apply_window(hu, windows[0]), spec)
    channels = hu_stack_to_channels(hu, windows=spec.window_objects(), mode=spec.channel_mode)
    return _finish(channels, spec)


def preprocess_windowed_uint8(images: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Turn already brain-windowed 8-bit slices (the Kaggle JPEGs) into network input.

    ``value / 255`` stands in for the image windowed with the spec's first window, which must
    be the one that produced the JPEGs for inference on HU to match. In ``multi_window`` mode
    the other windows are cut out of that one (8-bit values back to HU, then windowed again),
    so they must lie inside it: a narrow stroke window inside a wider brain window.

    Args:
        images: ``(N, H, W)`` on the 8-bit scale: uint8, or float32 (a JPEG resized in
            float, as training does, never rounded back), slices sorted along the patient axis.
        spec: The model's spec.

    Returns:
        ``(N, 3, S, S)`` float32.
    """
    _check_stack(images, 3, "an 8-bit image stack (N, H, W)")
    if images.dtype not in (np.uint8, np.float32):
        raise PreprocessError(f"Expected uint8 or float32 images, got dtype {images.dtype}.")
    mode = ChannelMode(spec.channel_mode)
    unit = images.astype(np.float32) / np.float32(255.0)
    if mode is ChannelMode.MULTI_WINDOW:
        return _finish(_rewindow(unit, spec.window_objects()), spec)
    if mode is ChannelMode.MIRROR:
        return _finish_mirror(unit, spec)
    if mode is ChannelMode.REPLICATE:
        return _finish_replicate(unit, spec)
    return _finish(_adjacent_channels(unit), spec)


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
