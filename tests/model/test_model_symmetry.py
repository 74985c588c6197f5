"""Midline alignment and mirror channels, on the head phantom (symmetric but for its lesion)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.checkpoint import random_spec
from model.errors import PreprocessError
from model.phantom import Lesion, head_phantom_hu, infarct_slices
from model.pixels import (
    apply_window,
    hu_stack_to_channels,
    preprocess_hu_stack,
    preprocess_windowed_uint8,
)
from model.spec import ChannelMode, Window, WindowSpec
from model.symmetry import align_to_midline, midline_transform, mirror_channels, unalign

WINDOW = Window(center=36.0, width=150.0)
SIZE = 96


def _phantom_slice(lesion: Lesion | None = None) -> np.ndarray:
    volume = head_phantom_hu(n_slices=12, size=SIZE, lesion=lesion, seed=3)
    return apply_window(volume[infarct_slices(12)[0]], WINDOW)


def _move(image: np.ndarray, degrees: float, shift_x: float, zoom: float) -> np.ndarray:
    """Rotate, shift and shrink an image the way a patient lies off-centre in the gantry."""
    radians = np.radians(degrees)
    cos, sin = np.cos(radians) / zoom, np.sin(radians) / zoom
    theta = torch.tensor([[[cos, -sin, shift_x], [sin, cos, 0.05]]], dtype=torch.float32)
    source = torch.from_numpy(image)[None, None]
    grid = torch.nn.functional.affine_grid(theta, [1, 1, *image.shape], align_corners=False)
    moved = torch.nn.functional.grid_sample(source, grid, align_corners=False)
    result: np.ndarray = moved[0, 0].numpy()
    return result


def _mirror_correlation(image: np.ndarray) -> float:
    region = (image > 0.1) | (image[:, ::-1] > 0.1)
    return float(np.corrcoef(image[region], image[:, ::-1][region])[0, 1])


@pytest.mark.parametrize(("degrees", "shift_x"), [(0.0, 0.0), (17.0, 0.12), (-24.0, -0.1)])
def test_alignment_undoes_a_tilted_off_centre_head(degrees: float, shift_x: float) -> None:
    upright = _phantom_slice()
    moved = _move(upright, degrees, shift_x, zoom=0.7)
    if degrees:
        assert _mirror_correlation(moved) < 0.7
    aligned = align_to_midline(moved)
    assert aligned.shape == moved.shape
    assert _mirror_correlation(aligned) > 0.95
    # Centred and scaled up: the head now fills most of the frame, as on an upright scan.
    head = aligned > 0.1
    assert head.mean() > 0.5
    ys, xs = np.nonzero(head)
    assert abs(xs.mean() - (SIZE - 1) / 2) < 2.0
    assert abs(ys.mean() - (SIZE - 1) / 2) < 3.0


def test_empty_or_headless_slices_come_back_unchanged() -> None:
    air = np.zeros((SIZE, SIZE), dtype=np.float32)
    np.testing.assert_array_equal(align_to_midline(air), air)
    speck = air.copy()
    speck[3, 3] = 1.0
    np.testing.assert_array_equal(align_to_midline(speck), speck)
    with pytest.raises(ValueError, match="square"):
        align_to_midline(np.zeros((4, 5), dtype=np.float32))


def test_difference_channel_shows_a_one_sided_infarct() -> None:
    normal = mirror_channels(_phantom_slice()[None])[0]
    infarct = mirror_channels(_phantom_slice(Lesion.INFARCT)[None])[0]
    assert normal.shape == (3, SIZE, SIZE)
    assert normal.dtype == np.float32
    assert normal.min() >= 0.0 and normal.max() <= 1.0
    np.testing.assert_allclose(normal[1], normal[0][:, ::-1])
    # A symmetric head differs from its mirror by noise only; a wedge on one side shows as a
    # dark region on that side of the difference channel and a bright one on the other.
    brain = (normal[0] > 0.2) & (normal[0] < 0.6)
    assert np.abs(normal[2][brain] - 0.5).mean() < 0.05
    low = (infarct[2] < 0.3).sum()
    high = (infarct[2] > 0.7).sum()
    assert low > 30 and high > 30
    assert low > 5 * (normal[2][brain] < 0.3).sum()


def test_mirror_mode_is_the_same_from_hu_and_from_8_bit_slices() -> None:
    spec = random_spec().model_copy(
        update={
            "channel_mode": ChannelMode.MIRROR,
            "windows": [WindowSpec(name="kaggle_jpeg", center=36.0, width=150.0)],
        }
    )
    hu = head_phantom_hu(n_slices=6, size=128, lesion=Lesion.HAEMORRHAGE, seed=1)[1:5]
    from_hu = preprocess_hu_stack(hu, spec)
    jpeg_like = np.rint(apply_window(hu, WINDOW) * 255).astype(np.uint8)
    from_uint8 = preprocess_windowed_uint8(jpeg_like, spec)
    assert from_hu.shape == (4, 3, spec.input_size, spec.input_size)
    # 8-bit rounding moves values by at most half a grey level before the same alignment.
    assert np.abs(from_hu - from_uint8).mean() < 0.01
    channels = hu_stack_to_channels(hu, windows=[WINDOW], mode=ChannelMode.MIRROR)
    assert channels.shape == (4, 3, 128, 128)
    # Slices that are not square are refused here; preprocess_hu_stack resizes them first.
    with pytest.raises(PreprocessError, match="square"):
        hu_stack_to_channels(hu[:, :, :100], windows=[WINDOW], mode=ChannelMode.MIRROR)
    assert preprocess_hu_stack(hu[:, :, :100], spec).shape == from_hu.shape


def test_a_map_drawn_on_the_aligned_frame_lands_back_on_the_slice() -> None:
    moved = _move(_phantom_slice(Lesion.INFARCT), 20.0, 0.1, zoom=0.7)
    transform = midline_transform(moved)
    assert transform is not None and transform.shape == (2, 3)
    aligned = align_to_midline(moved)
    back = unalign(aligned, transform, moved.shape)
    assert back.shape == moved.shape
    head = moved > 0.1
    assert np.corrcoef(back[head], moved[head])[0, 1] > 0.95
    # At twice the resolution the same map still fits: coordinates are resolution-free.
    assert unalign(aligned, transform, (2 * SIZE, 2 * SIZE)).shape == (2 * SIZE, 2 * SIZE)
    np.testing.assert_allclose(unalign(aligned, None, moved.shape), aligned, atol=1e-4)
    assert midline_transform(np.zeros((SIZE, SIZE), dtype=np.float32)) is None
