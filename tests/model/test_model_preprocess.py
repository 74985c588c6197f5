"""HU conversion on real files, windowing, channel modes, resizing, normalisation, sorting."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from model.checkpoint import random_spec
from model.dicom import dataset_to_hu, sort_slices
from model.errors import PreprocessError
from model.pixels import (
    apply_window,
    hu_stack_to_channels,
    normalize,
    preprocess_hu_stack,
    preprocess_windowed_uint8,
    resize_batch,
)
from model.spec import WINDOW_PRESETS, ChannelMode, Window, WindowSpec
from tests.helpers import require_tool


@pytest.fixture(scope="module")
def slices_dir(shared_data: Path) -> Path:
    return shared_data / "dicom" / "single-slices"


def _hu(path: Path) -> np.ndarray:
    return dataset_to_hu(pydicom.dcmread(path))


def _regions(hu: np.ndarray) -> tuple[float, float, float]:
    """Air beside the head (mid left edge), brain at the centre, and the bone percentile."""
    rows, cols = hu.shape
    air = float(hu[rows // 2 - 5 : rows // 2 + 5, 5:15].mean())
    centre = float(np.median(hu[rows // 2 - 20 : rows // 2 + 20, cols // 2 - 20 : cols // 2 + 20]))
    return air, centre, float(np.percentile(hu, 99.5))


@pytest.mark.parametrize(
    "name", ["693_UNCR.dcm", "693_J2KR.dcm", "J2K_pixelrep_mismatch.dcm", "CT_Explicit_Little.dcm"]
)
def test_head_ct_has_plausible_hu(slices_dir: Path, name: str) -> None:
    hu = _hu(slices_dir / name)
    assert hu.dtype == np.float32
    assert hu.ndim == 2
    air, centre, bone = _regions(hu)
    assert -1024 <= air < -950
    assert 15 < centre < 50
    assert 700 < bone < 2000
    assert hu.min() == -1024.0
    assert hu.max() < 3100


def test_j2k_pixel_representation_mismatch_is_sign_extended(slices_dir: Path) -> None:
    ds = pydicom.dcmread(slices_dir / "J2K_pixelrep_mismatch.dcm")
    # The quirk this file carries: a signed dataset with an unsigned 13-bit codestream. Read as
    # unsigned, GE's -2000 padding would come out as 6192 HU.
    assert ds.PixelRepresentation == 1
    assert ds.BitsStored == 13
    hu = dataset_to_hu(ds)
    assert hu.max() < 2000
    air_fraction = float(np.mean(hu <= -950))
    assert 0.3 < air_fraction < 0.8


def test_padding_value_becomes_air(slices_dir: Path) -> None:
    ds = pydicom.dcmread(slices_dir / "693_UNCR.dcm")
    raw = ds.pixel_array
    assert ds.PixelPaddingValue == -2000
    hu = dataset_to_hu(ds)
    assert np.all(hu[raw == -2000] == -1024.0)
    inside = raw > -1000
    assert np.array_equal(hu[inside], raw[inside].astype(np.float32) - 1024.0)


def test_jpeg2000_lossless_equals_uncompressed(slices_dir: Path) -> None:
    assert np.array_equal(_hu(slices_dir / "693_J2KR.dcm"), _hu(slices_dir / "693_UNCR.dcm"))


def test_jpeg2000_lossy_matches_its_decompressed_copy_and_is_close_to_original(
    slices_dir: Path,
) -> None:
    lossy = _hu(slices_dir / "693_J2KI.dcm")
    # 693_UNCI is the same lossy image stored uncompressed.
    assert np.array_equal(lossy, _hu(slices_dir / "693_UNCI.dcm"))
    original = _hu(slices_dir / "693_UNCR.dcm")
    assert np.corrcoef(lossy.ravel(), original.ravel())[0, 1] > 0.98
    centre = (slice(236, 276), slice(236, 276))
    assert abs(float(np.median(lossy[centre])) - float(np.median(original[centre]))) < 15


def _dcmtk(tool: str, source: Path, target: Path, *args: str) -> Path:
    require_tool(tool, "dcmtk")
    subprocess.run([tool, *args, str(source), str(target)], check=True, capture_output=True)
    return target


LOSSLESS_CONVERSIONS = {
    "jpeg-ls": ("dcmcjpls", (), "1.2.840.10008.1.2.4.80"),
    "rle": ("dcmcrle", (), "1.2.840.10008.1.2.5"),
    "deflate": ("dcmconv", ("+td",), "1.2.840.10008.1.2.1.99"),
}


@pytest.mark.parametrize("conversion", sorted(LOSSLESS_CONVERSIONS))
@pytest.mark.parametrize("name", ["693_UNCR.dcm", "CT_Explicit_Little.dcm"])
def test_dcmtk_lossless_copies_decode_identically(
    slices_dir: Path, tmp_path: Path, conversion: str, name: str
) -> None:
    tool, args, syntax = LOSSLESS_CONVERSIONS[conversion]
    copy = _dcmtk(tool, slices_dir / name, tmp_path / "copy.dcm", *args)
    ds = pydicom.dcmread(copy)
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert np.array_equal(dataset_to_hu(ds), _hu(slices_dir / name))


def test_jpeg_lossless_matches_dcmtk_decompression(slices_dir: Path, tmp_path: Path) -> None:
    source = slices_dir / "CT_JPEG70.dcm"
    plain = _dcmtk("dcmdjpeg", source, tmp_path / "plain.dcm")
    assert pydicom.dcmread(source).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    hu = _hu(source)
    assert hu.shape == (400, 512)
    assert np.array_equal(hu, _hu(plain))


def test_mr_image_is_rejected(slices_dir: Path) -> None:
    with pytest.raises(PreprocessError, match="Modality is 'MR'"):
        _hu(slices_dir / "MR_Implicit_Little.dcm")


def test_secondary_capture_is_rejected(shared_data: Path) -> None:
    summary = shared_data / "dicom" / "philips-head-phantom" / "exam-summary"
    ds = pydicom.dcmread(next(p for p in sorted(summary.iterdir()) if p.is_file()))
    assert ds.Modality == "CT"
    with pytest.raises(PreprocessError, match="Secondary Capture"):
        dataset_to_hu(ds)


def _tiny_ct(pixels: np.ndarray, **elements: object) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality = "CT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.PixelData = pixels.tobytes()
    for key, value in elements.items():
        setattr(ds, key, value)
    return ds


def test_rescale_and_padding_range() -> None:
    pixels = np.array([[0, 5, 10, 1024], [1064, 2024, 3, 1]], dtype=np.uint16)
    ds = _tiny_ct(
        pixels,
        RescaleSlope=1,
        RescaleIntercept=-1024,
        PixelPaddingValue=0,
        PixelPaddingRangeLimit=5,
    )
    hu = dataset_to_hu(ds)
    expected = np.array([[-1024, -1024, -1014, 0], [40, 1000, -1024, -1024]], dtype=np.float32)
    assert np.array_equal(hu, expected)


def test_missing_rescale_is_refused_and_scaling() -> None:
    pixels = np.array([[-1000, 20], [40, 500]], dtype=np.int16)
    # Both are Type 1 in the CT Image module: raw values are never read as HU (issue 11).
    with pytest.raises(PreprocessError, match="RescaleSlope"):
        dataset_to_hu(_tiny_ct(pixels))
    with pytest.raises(PreprocessError, match="RescaleIntercept"):
        dataset_to_hu(_tiny_ct(pixels, RescaleSlope=1))
    with pytest.raises(PreprocessError, match="Slope of 0"):
        dataset_to_hu(_tiny_ct(pixels, RescaleSlope=0, RescaleIntercept=0))
    unit = dataset_to_hu(_tiny_ct(pixels, RescaleSlope=1, RescaleIntercept=0))
    assert np.array_equal(unit, pixels.astype(np.float32))
    scaled = dataset_to_hu(_tiny_ct(pixels, RescaleSlope=2, RescaleIntercept=-10))
    assert np.array_equal(scaled, np.array([[-1024, 30], [70, 990]], dtype=np.float32))


def test_missing_pixels_and_multiframe_are_rejected() -> None:
    ds = _tiny_ct(np.zeros((2, 2), dtype=np.int16))
    del ds.PixelData
    with pytest.raises(PreprocessError, match="no Pixel Data"):
        dataset_to_hu(ds)
    multi = _tiny_ct(np.zeros((2, 2, 2), dtype=np.int16).reshape(4, 2), NumberOfFrames=2)
    multi.Rows = 2
    with pytest.raises(PreprocessError, match="single-frame"):
        dataset_to_hu(multi)


def test_window_presets() -> None:
    assert WINDOW_PRESETS["brain"] == Window(40, 80)
    assert WINDOW_PRESETS["stroke"] == Window(40, 40)
    assert WINDOW_PRESETS["stroke_narrow"] == Window(32, 8)
    assert WINDOW_PRESETS["subdural"] == Window(80, 200)
    assert WINDOW_PRESETS["bone"] == Window(600, 2800)


def test_apply_window_is_linear_and_clipped() -> None:
    hu = np.array([-1000, 0, 20, 40, 60, 80, 3000], dtype=np.float32)
    out = apply_window(hu, Window(40, 80))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0, 0, 0.25, 0.5, 0.75, 1, 1])


def test_channel_modes() -> None:
    hu = np.stack([np.full((2, 2), v, dtype=np.float32) for v in (0, 40, 80)])
    replicate = hu_stack_to_channels(hu, windows=[Window(40, 80)], mode=ChannelMode.REPLICATE)
    assert replicate.shape == (3, 3, 2, 2)
    np.testing.assert_allclose(
        replicate[:, :, 0, 0], [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [1.0, 1.0, 1.0]]
    )

    adjacent = hu_stack_to_channels(hu, windows=[Window(40, 80)], mode=ChannelMode.ADJACENT)
    np.testing.assert_allclose(
        adjacent[:, :, 0, 0], [[0.0, 0.0, 0.5], [0.0, 0.5, 1.0], [0.5, 1.0, 1.0]]
    )

    windows = [Window(40, 80), Window(40, 40), Window(0, 160)]
    multi = hu_stack_to_channels(hu[1:2], windows=windows, mode=ChannelMode.MULTI_WINDOW)
    np.testing.assert_allclose(multi[0, :, 0, 0], [0.5, 0.5, 0.75])

    with pytest.raises(PreprocessError, match="exactly 3"):
        hu_stack_to_channels(hu, windows=[Window(40, 80)], mode=ChannelMode.MULTI_WINDOW)
    with pytest.raises(PreprocessError, match="exactly 1"):
        hu_stack_to_channels(hu, windows=windows, mode=ChannelMode.REPLICATE)


def test_resize_batch() -> None:
    x = np.zeros((1, 1, 4, 4), dtype=np.float32)
    x[..., :, 2:] = 1.0
    down = resize_batch(x, 2)
    # Antialiased bilinear: the triangle filter spans 4 input pixels when halving.
    np.testing.assert_allclose(down, [[[[1 / 7, 6 / 7], [1 / 7, 6 / 7]]]], rtol=1e-5)
    constant = resize_batch(np.full((2, 3, 7, 5), 0.3, dtype=np.float32), 16)
    assert constant.shape == (2, 3, 16, 16)
    np.testing.assert_allclose(constant, 0.3, rtol=1e-6)
    same = resize_batch(x, 4)
    assert np.array_equal(same, x)
    assert same is not x


@pytest.mark.parametrize("size", [16, 64])
def test_resize_matches_pillow_bilinear(size: int) -> None:
    image = np.random.default_rng(0).random((40, 30)).astype(np.float32)
    reference = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(resize_batch(image[None, None], size)[0, 0], reference, atol=1e-5)


def test_resize_downscale_is_antialiased() -> None:
    checker = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.float32)[None, None]
    np.testing.assert_allclose(resize_batch(checker, 8), 0.5, atol=0.02)


def test_normalize() -> None:
    x = np.ones((1, 3, 1, 1), dtype=np.float32)
    out = normalize(x, (0.5, 0.0, 1.0), (0.5, 2.0, 1.0))
    np.testing.assert_allclose(out[0, :, 0, 0], [1.0, 0.5, 0.0])
    with pytest.raises(PreprocessError):
        normalize(x, (0.5, 0.5), (1.0, 1.0))


def test_preprocess_hu_stack_follows_spec() -> None:
    spec = random_spec()
    hu = np.full((3, 100, 80), 40.0, dtype=np.float32)
    out = preprocess_hu_stack(hu, spec)
    assert out.shape == (3, 3, spec.input_size, spec.input_size)
    # brain window maps 40 HU to 0.5, and (0.5 - 0.5) / 0.25 = 0.
    np.testing.assert_allclose(out, 0.0, atol=1e-6)


def test_preprocess_windowed_uint8() -> None:
    spec = random_spec()
    images = np.full((2, 32, 32), 255, dtype=np.uint8)
    out = preprocess_windowed_uint8(images, spec)
    assert out.shape == (2, 3, 64, 64)
    np.testing.assert_allclose(out, 2.0, atol=1e-5)
    # Same numbers as the HU path for the same windowed values.
    hu = np.full((2, 32, 32), 80.0, dtype=np.float32)
    np.testing.assert_allclose(out, preprocess_hu_stack(hu, spec), atol=1e-5)
    adjacent = spec.model_copy(update={"channel_mode": ChannelMode.ADJACENT})
    ramp = np.stack([np.full((8, 8), v, dtype=np.uint8) for v in (0, 255)])
    out = preprocess_windowed_uint8(ramp, adjacent)
    np.testing.assert_allclose(out[:, :, 0, 0], [[-2, -2, 2], [-2, 2, 2]], atol=1e-5)


def test_stroke_windows_are_cut_out_of_an_8_bit_brain_window() -> None:
    """Multi-window input from JPEGs equals the same windows applied to HU (to 8-bit rounding)."""
    names = ("brain", "stroke", "stroke_narrow")
    windows = [
        WindowSpec(name=n, center=WINDOW_PRESETS[n].center, width=WINDOW_PRESETS[n].width)
        for n in names
    ]
    spec = random_spec().model_copy(
        update={"channel_mode": ChannelMode.MULTI_WINDOW, "windows": windows}
    )
    hu = np.linspace(-100.0, 150.0, 4 * 64 * 64, dtype=np.float32).reshape(4, 64, 64)
    jpeg = np.rint(apply_window(hu, WINDOW_PRESETS["brain"]) * 255).astype(np.uint8)
    from_jpeg = preprocess_windowed_uint8(jpeg, spec)
    from_hu = preprocess_hu_stack(hu, spec)
    assert from_jpeg.shape == (4, 3, 64, 64)
    # One 8-bit step of a 80 HU window is 0.31 HU: 0.04 of the 8 HU narrow window, times 4 (std).
    assert np.abs(from_jpeg - from_hu).max() < 0.2
    assert np.abs(from_jpeg - from_hu).mean() < 0.02
    # The narrow window spreads what the brain window squeezes into a few grey levels.
    assert len(np.unique(from_jpeg[:, 2])) > 5
    wide = [*windows[:2], WindowSpec(name="subdural", center=80.0, width=200.0)]
    with pytest.raises(PreprocessError, match="cannot be cut out"):
        preprocess_windowed_uint8(jpeg, spec.model_copy(update={"windows": wide}))


def _positioned(z: float | None, instance: int) -> Dataset:
    ds = Dataset()
    ds.InstanceNumber = instance
    if z is not None:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, z]
    return ds


def test_sort_slices_by_position_then_instance_number() -> None:
    datasets = [_positioned(z, i) for z, i in ((10.0, 1), (-5.0, 3), (2.5, 2))]
    assert sort_slices(datasets) == [1, 2, 0]
    # Feet-first orientation flips the normal; the order follows the normal, not raw z.
    flipped = [_positioned(z, i) for z, i in ((10.0, 1), (-5.0, 3), (2.5, 2))]
    for ds in flipped:
        ds.ImageOrientationPatient = [-1, 0, 0, 0, 1, 0]
    assert sort_slices(flipped) == [0, 2, 1]
    no_position = [_positioned(None, i) for i in (3, 1, 2)]
    assert sort_slices(no_position) == [1, 2, 0]
