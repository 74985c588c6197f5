"""Midline alignment and mirror channels: the left-right comparison a radiologist makes.

A stroke shows as a region that differs from the same region of the other hemisphere (darker
for an infarct, brighter for a bleed). The network is not told where the midline is, and with
69 patients it cannot learn it, so this module finds it: each windowed slice is centred on the
head, scaled so the head fills the frame, and turned so that it best matches its own mirror
image. The mirror channels are then the aligned slice, its mirror image and their difference.

Everything here is deterministic, numpy in and numpy out (torch only resamples), and runs on
whatever resolution it is given, so training (JPEGs) and inference (HU) share it.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

HEAD_THRESHOLD = 0.1
"""Windowed value above which a pixel counts as head (skin, brain, bone), not air or fat."""

TARGET_RADIUS = 0.9
"""Where the head's outer radius lands, as a fraction of the half-width of the output frame."""

COARSE_ANGLES = np.arange(-30.0, 30.01, 5.0)
"""Rotations (degrees) tried first around the head's centre when searching for the midline."""

COARSE_SHIFTS = np.arange(-0.1, 0.1001, 0.05)
"""Horizontal shifts of the midline tried first (fraction of the half-width of the frame)."""

FINE_ANGLES = np.arange(-2.0, 2.01, 1.0)
"""Rotations tried next, around the best coarse one."""

FINE_SHIFTS = np.arange(-0.025, 0.0251, 0.0125)
"""Shifts tried next, around the best coarse one."""

SEARCH_SIZE = 48
"""Side length, in pixels, of the copy on which the search runs."""

DIFFERENCE_GAIN = 2.0
"""The difference channel is ``0.5 + gain * (slice - mirror)``, clipped to [0, 1]."""


def _head_geometry(image: np.ndarray) -> tuple[float, float, float] | None:
    """Centre (x, y) and outer radius of the largest head-like blob, in [-1, 1] coordinates."""
    mask = image > HEAD_THRESHOLD
    labels, count = ndimage.label(mask)
    if count == 0:
        return None
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    ys, xs = np.nonzero(labels == 1 + int(np.argmax(sizes)))
    if ys.size < 16:
        return None
    height, width = image.shape
    x = (xs + 0.5) / width * 2.0 - 1.0
    y = (ys + 0.5) / height * 2.0 - 1.0
    cx, cy = float(x.mean()), float(y.mean())
    radius = float(np.percentile(np.hypot(x - cx, y - cy), 98))
    return cx, cy, max(radius, 0.05)


def _thetas(
    cx: float, cy: float, scale: float, angles: np.ndarray, shifts: np.ndarray
) -> torch.Tensor:
    """Affine maps (output → input coordinates), one per (angle, shift) pair."""
    radians = np.radians(angles)
    cos, sin = np.cos(radians) * scale, np.sin(radians) * scale
    # input = centre + scale * R(angle) @ (output + (shift, 0))
    tx = cx + cos * shifts
    ty = cy + sin * shifts
    theta = np.stack(
        [np.stack([cos, -sin, tx], axis=-1), np.stack([sin, cos, ty], axis=-1)], axis=-2
    )
    return torch.from_numpy(theta.astype(np.float32))


def _warp(image: np.ndarray, theta: torch.Tensor, size: int) -> torch.Tensor:
    """``image`` resampled through each affine map of ``theta``: ``(len(theta), size, size)``."""
    source = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    source = source.expand(theta.shape[0], 1, *image.shape)
    grid = torch.nn.functional.affine_grid(
        theta, [theta.shape[0], 1, size, size], align_corners=False
    )
    warped = torch.nn.functional.grid_sample(
        source, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return warped[:, 0]


def _mirror_scores(candidates: torch.Tensor) -> torch.Tensor:
    """Correlation of each candidate with its own mirror image, over the head."""
    mirrored = torch.flip(candidates, dims=[-1])
    region = ((candidates > HEAD_THRESHOLD) | (mirrored > HEAD_THRESHOLD)).float()
    count = region.sum(dim=(-2, -1)).clamp(min=1.0)
    a_mean = (candidates * region).sum(dim=(-2, -1)) / count
    b_mean = (mirrored * region).sum(dim=(-2, -1)) / count
    a = (candidates - a_mean[:, None, None]) * region
    b = (mirrored - b_mean[:, None, None]) * region
    covariance = (a * b).sum(dim=(-2, -1))
    spread = torch.sqrt((a * a).sum(dim=(-2, -1)) * (b * b).sum(dim=(-2, -1))).clamp(min=1e-8)
    return covariance / spread


def midline_transform(image: np.ndarray) -> np.ndarray | None:
    """The affine map that aligns one windowed slice on its midline (see :func:`align_to_midline`).

    Args:
        image: ``(H, W)`` windowed values in [0, 1], square.

    Returns:
        A ``(2, 3)`` float32 map from aligned to original coordinates, both in the [-1, 1]
        convention of ``torch.nn.functional.affine_grid`` (so it holds at any resolution), or
        None when no head is found.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2 or image.shape[0] != image.shape[1]:
        raise ValueError(f"Expected one square image (H, W), got shape {image.shape}.")
    geometry = _head_geometry(image)
    if geometry is None:
        return None
    cx, cy, radius = geometry
    scale = radius / TARGET_RADIUS
    search = min(image.shape[0], SEARCH_SIZE)
    angle, shift = 0.0, 0.0
    for angles, shifts in ((COARSE_ANGLES, COARSE_SHIFTS), (FINE_ANGLES, FINE_SHIFTS)):
        mesh = np.meshgrid(angle + angles, shift + shifts, indexing="ij")
        tried_angles, tried_shifts = mesh[0].ravel(), mesh[1].ravel()
        thetas = _thetas(cx, cy, scale, tried_angles, tried_shifts)
        best = int(torch.argmax(_mirror_scores(_warp(image, thetas, search))))
        angle, shift = float(tried_angles[best]), float(tried_shifts[best])
    transform: np.ndarray = _thetas(cx, cy, scale, np.array([angle]), np.array([shift]))[0].numpy()
    return transform


def align_to_midline(image: np.ndarray) -> np.ndarray:
    """Centre, scale and rotate one windowed slice so its midline is the frame's vertical axis.

    Args:
        image: ``(H, W)`` windowed values in [0, 1], square.

    Returns:
        ``(H, W)`` float32, the same size; returned unchanged (as float32) when no head is found.
    """
    image = np.asarray(image, dtype=np.float32)
    transform = midline_transform(image)
    if transform is None:
        return image.copy()
    aligned: np.ndarray = _warp(image, torch.from_numpy(transform)[None], image.shape[0])[0].numpy()
    return aligned


def unalign(
    aligned: np.ndarray, transform: np.ndarray | None, shape: tuple[int, int]
) -> np.ndarray:
    """Map an image drawn on the aligned frame (a heat map) back onto the original slice.

    Args:
        aligned: ``(S, S)`` values on the aligned frame.
        transform: What :func:`midline_transform` returned for the slice (None: not aligned).
        shape: ``(H, W)`` of the original slice.

    Returns:
        ``(H, W)`` float32; zero where the aligned frame does not cover the slice.
    """
    if transform is None:
        theta = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    else:
        forward = np.vstack([transform.astype(np.float64), [0.0, 0.0, 1.0]])
        theta = torch.from_numpy(np.linalg.inv(forward)[:2].astype(np.float32))[None]
    source = torch.from_numpy(np.ascontiguousarray(aligned, dtype=np.float32))[None, None]
    grid = torch.nn.functional.affine_grid(theta, [1, 1, *shape], align_corners=False)
    back = torch.nn.functional.grid_sample(
        source, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    result: np.ndarray = back[0, 0].numpy()
    return result


def mirror_channels(images: np.ndarray) -> np.ndarray:
    """Aligned slice, its mirror image, and their difference, as three channels.

    Args:
        images: ``(N, S, S)`` windowed values in [0, 1].

    Returns:
        ``(N, 3, S, S)`` float32 in [0, 1].
    """
    aligned = np.stack([align_to_midline(image) for image in images])
    mirrored = aligned[:, :, ::-1]
    difference = np.clip(0.5 + DIFFERENCE_GAIN * (aligned - mirrored), 0.0, 1.0)
    return np.ascontiguousarray(np.stack([aligned, mirrored, difference], axis=1), np.float32)
