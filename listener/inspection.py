"""Reads what the listener needs from a received data set, and refuses what it must not store.

The data set is parsed from the bytes as they arrived, up to the pixel data, without decoding
pixels: parsing stays cheap whatever the transfer syntax. The pixel data's encapsulation is
checked against the transfer syntax on the encoded bytes (item headers only), and a CT image
must carry every attribute its HU conversion and geometry rely on.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from listener.errors import (
    ImageTooLargeError,
    InvalidInstanceError,
    MissingImageAttributeError,
    NotAnImageError,
)
from listener.storage import instance_relpath, validate_uid
from stroke_triage.edge import CT_IMAGE_STORAGE

PIXEL_DATA = 0x7FE00010
#: Pixel Data, Float Pixel Data and Double Float Pixel Data.
PIXEL_TAGS = frozenset({PIXEL_DATA, 0x7FE00008, 0x7FE00009})
UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM = 0xFFFEE000
SEQUENCE_DELIMITER = 0xFFFEE0DD
#: Explicit VRs whose element header has a 32-bit length (12 bytes in all).
LONG_LENGTH_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"})


@dataclass(frozen=True)
class _PixelElement:
    """Where the (unread) pixel data element lies in the received bytes."""

    tag: int
    length: int
    value_offset: int
    buffer: BytesIO
    end: int

    @property
    def remaining(self) -> int:
        """Bytes from the start of the value to the end of the data set."""
        return self.end - self.value_offset


@dataclass(frozen=True)
class ReceivedInstance:
    """The identity of a received instance and where it is stored."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    series_description: str | None
    relpath: Path


#: The attributes the listener reads: keyword, tag, VR (for implicit VR) and the value's kind.
_WANTED: dict[int, tuple[str, str]] = {
    0x00080008: ("ImageType", "CS"),
    0x00080016: ("SOPClassUID", "UI"),
    0x00080060: ("Modality", "CS"),
    0x0008103E: ("SeriesDescription", "LO"),
    0x0020000D: ("StudyInstanceUID", "UI"),
    0x0020000E: ("SeriesInstanceUID", "UI"),
    0x00200032: ("ImagePositionPatient", "DS"),
    0x00200037: ("ImageOrientationPatient", "DS"),
    0x00280002: ("SamplesPerPixel", "US"),
    0x00280004: ("PhotometricInterpretation", "CS"),
    0x00280008: ("NumberOfFrames", "IS"),
    0x00280010: ("Rows", "US"),
    0x00280011: ("Columns", "US"),
    0x00280030: ("PixelSpacing", "DS"),
    0x00280100: ("BitsAllocated", "US"),
    0x00280101: ("BitsStored", "US"),
    0x00280103: ("PixelRepresentation", "US"),
    0x00281052: ("RescaleIntercept", "DS"),
    0x00281053: ("RescaleSlope", "DS"),
}
_KEYWORDS = tuple(keyword for keyword, _ in _WANTED.values())
_ITEM_DELIMITER = 0xFFFEE00D
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "SH", "TM", "UI"})

Value = str | int | list[str] | list[int]
Header = dict[str, Value]
"""The attributes the listener reads, by keyword: text (one value), a list (several), or int."""


class _UnusualError(Exception):
    """The fast scan met something it leaves to pydicom (the slower, general parser)."""


def inspect_dataset(
    stream: bytes | BytesIO,
    *,
    transfer_syntax_uid: str,
    sop_class_uid: str,
    sop_instance_uid: str,
    max_image_pixels: int,
) -> ReceivedInstance:
    """Check an encoded data set (without file meta) and say where it is stored.

    Args:
        stream: The data set as received.
        transfer_syntax_uid: The presentation context's transfer syntax.
        sop_class_uid: Affected SOP Class UID of the C-STORE request.
        sop_instance_uid: Affected SOP Instance UID of the C-STORE request.
        max_image_pixels: Most rows x columns x frames x samples accepted.

    Raises:
        InvalidUIDError: A UID that would become part of a path is not valid.
        NotAnImageError: An image storage object has no image.
        ImageTooLargeError: The image is larger than ``max_image_pixels``.
        MissingImageAttributeError: A CT image lacks an attribute HU or geometry needs.
        InvalidInstanceError: The data set cannot be parsed, lacks a required UID, or its
            pixel data does not match the transfer syntax (encapsulated or native).
    """
    syntax = UID(transfer_syntax_uid)
    header, pixels = _parse(stream, syntax)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if not header.get(keyword):
            raise InvalidInstanceError(f"The data set has no {keyword}.")
    study_uid = validate_uid(_text(header["StudyInstanceUID"]), what="Study Instance UID")
    series_uid = validate_uid(_text(header["SeriesInstanceUID"]), what="Series Instance UID")
    sop_uid = validate_uid(sop_instance_uid, what="SOP Instance UID")
    dataset_class = _text(header.get("SOPClassUID", "")).strip()
    if dataset_class and dataset_class != sop_class_uid.strip():
        raise InvalidInstanceError(
            f"The data set's SOP Class UID {dataset_class} differs from the request's "
            f"{sop_class_uid}."
        )
    if _is_image_class(sop_class_uid):
        _check_image(header, pixels, syntax, max_image_pixels)
    if sop_class_uid.strip() == CT_IMAGE_STORAGE and not _is_localizer(header):
        check_ct_attributes(header)
    description = header.get("SeriesDescription")
    return ReceivedInstance(
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        sop_instance_uid=sop_uid,
        sop_class_uid=validate_uid(sop_class_uid, what="SOP Class UID"),
        modality=_text(header.get("Modality", ""))[:16],
        series_description=None if description is None else _text(description)[:64],
        relpath=instance_relpath(study_uid, series_uid, sop_uid),
    )


def _text(value: Value) -> str:
    """One value as text; several values joined as DICOM encodes them (backslash)."""
    if isinstance(value, list):
        return "\\".join(str(item) for item in value)
    return str(value)


def _parse(stream: bytes | BytesIO, syntax: UID) -> tuple[Header, _PixelElement | None]:
    """Read the wanted attributes; return them and where the pixel data element lies.

    Little endian data sets (nearly all) are scanned element by element with ``struct``,
    converting only the attributes in ``_WANTED``; anything unusual (big endian, an unknown
    length inside a UN element, a VR other than the expected one, a truncated element) is
    parsed by pydicom instead, which also words the error when the data set is malformed.
    """
    buffer = stream if isinstance(stream, BytesIO) else BytesIO(stream)
    buffer.seek(0)
    if syntax == DeflatedExplicitVRLittleEndian:
        try:
            buffer = BytesIO(zlib.decompress(buffer.getbuffer(), -zlib.MAX_WBITS))
        except zlib.error as exc:
            raise InvalidInstanceError(f"The deflated data set cannot be inflated: {exc}") from exc
    if not syntax.is_transfer_syntax:
        raise InvalidInstanceError(f"The transfer syntax {syntax} is not known.")
    if syntax.is_little_endian:
        try:
            return _scan(buffer, implicit=syntax.is_implicit_VR)
        except _UnusualError:
            pass
    return _parse_with_pydicom(buffer, syntax)


def _scan(buffer: BytesIO, *, implicit: bool) -> tuple[Header, _PixelElement | None]:
    """The fast path of :func:`_parse`: top-level elements only, sequences skipped."""
    header: Header = {}
    with buffer.getbuffer() as data:
        end = data.nbytes
        position = 0
        while position < end:
            if position + 8 > end:
                raise _UnusualError
            group, element = struct.unpack_from("<HH", data, position)
            tag = group << 16 | element
            if implicit:
                vr = _WANTED[tag][1] if tag in _WANTED else ""
                (length,) = struct.unpack_from("<I", data, position + 4)
                start = position + 8
            else:
                vr = bytes(data[position + 4 : position + 6]).decode("latin-1")
                if vr in LONG_LENGTH_VRS:
                    if position + 12 > end:
                        raise _UnusualError
                    (length,) = struct.unpack_from("<I", data, position + 8)
                    start = position + 12
                else:
                    (length,) = struct.unpack_from("<H", data, position + 6)
                    start = position + 8
            if tag in PIXEL_TAGS:
                pixels = _PixelElement(
                    tag=tag, length=length, value_offset=start, buffer=buffer, end=end
                )
                return header, pixels
            if length == UNDEFINED_LENGTH:
                if tag in _WANTED or (not implicit and vr != "SQ"):
                    raise _UnusualError
                position = _skip_sequence(data, start, end, implicit=implicit)
                continue
            if start + length > end:
                raise _UnusualError
            if tag in _WANTED:
                keyword, expected = _WANTED[tag]
                if vr != expected:
                    raise _UnusualError
                header[keyword] = _value(data[start : start + length], expected)
            elif tag > PIXEL_DATA:
                break
            position = start + length
    return header, None


def _skip_sequence(data: memoryview, start: int, end: int, *, implicit: bool) -> int:
    """Skip a sequence of undefined length; return where the next element starts."""
    position = start
    while True:
        if position + 8 > end:
            raise _UnusualError
        group, element, length = struct.unpack_from("<HHI", data, position)
        tag = group << 16 | element
        position += 8
        if tag == SEQUENCE_DELIMITER:
            return position
        if tag != ITEM:
            raise _UnusualError
        if length != UNDEFINED_LENGTH:
            position += length
            continue
        position = _skip_item(data, position, end, implicit=implicit)


def _skip_item(data: memoryview, start: int, end: int, *, implicit: bool) -> int:
    """Skip the elements of an item of undefined length, up to its delimiter."""
    position = start
    while True:
        if position + 8 > end:
            raise _UnusualError
        group, element = struct.unpack_from("<HH", data, position)
        tag = group << 16 | element
        if tag == _ITEM_DELIMITER:
            return position + 8
        vr = "" if implicit else bytes(data[position + 4 : position + 6]).decode("latin-1")
        if implicit:
            (length,) = struct.unpack_from("<I", data, position + 4)
            position += 8
        elif vr in LONG_LENGTH_VRS:
            (length,) = struct.unpack_from("<I", data, position + 8)
            position += 12
        else:
            (length,) = struct.unpack_from("<H", data, position + 6)
            position += 8
        if length == UNDEFINED_LENGTH:
            if not implicit and vr != "SQ":
                raise _UnusualError
            position = _skip_sequence(data, position, end, implicit=implicit)
        else:
            position += length
        if position > end:
            raise _UnusualError


def _value(raw: memoryview, vr: str) -> Value:
    """Convert one wanted value: text (split on backslash when several) or unsigned shorts."""
    if vr == "US":
        if len(raw) % 2:
            raise _UnusualError
        numbers = [number for (number,) in struct.iter_unpack("<H", raw)]
        if not numbers:
            return ""
        return numbers[0] if len(numbers) == 1 else numbers
    text = bytes(raw).decode("latin-1")
    if vr == "UI":
        text = text.rstrip("\x00")
    parts = [part.strip(" \x00") for part in text.split("\\")]
    return parts[0] if len(parts) == 1 else parts


def _parse_with_pydicom(buffer: BytesIO, syntax: UID) -> tuple[Header, _PixelElement | None]:
    """The general path of :func:`_parse`: pydicom reads up to the pixel data."""
    buffer.seek(0)
    found: list[tuple[int, str | None, int]] = []

    def at_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
        if tag in PIXEL_TAGS:
            found.append((int(tag), vr, length))
            return True
        return False

    try:
        dataset = read_dataset(
            buffer, syntax.is_implicit_VR, syntax.is_little_endian, stop_when=at_pixels
        )
        # Convert the values we use here, so that a malformed one fails here, not later.
        header = _plain(dataset)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError) as exc:
        raise InvalidInstanceError(f"The data set cannot be parsed: {exc}") from exc
    if not found:
        return header, None
    tag, vr, length = found[0]
    # pydicom rewinds to the start of the element: skip its header (8 bytes, or 12 for an
    # explicit VR with a 32-bit length such as OB and OW).
    header_length = 12 if not syntax.is_implicit_VR and vr in LONG_LENGTH_VRS else 8
    element = _PixelElement(
        tag=tag,
        length=length,
        value_offset=buffer.tell() + header_length,
        buffer=buffer,
        end=buffer.getbuffer().nbytes,
    )
    return header, element


def _plain(dataset: Dataset) -> Header:
    """The wanted attributes of a pydicom data set, as the fast scan gives them."""
    header: Header = {}
    for keyword in _KEYWORDS:
        value = dataset.get(keyword)
        if value is None:
            continue
        if isinstance(value, MultiValue | list | tuple):
            items = list(value)
            if all(isinstance(item, int) and not isinstance(item, str) for item in items):
                header[keyword] = [int(item) for item in items]
            else:
                header[keyword] = [str(item) for item in items]
        elif isinstance(value, int) and not isinstance(value, str):
            header[keyword] = int(value)
        else:
            header[keyword] = str(value)
    return header


def _is_image_class(sop_class_uid: str) -> bool:
    name = UID(sop_class_uid.strip()).name
    return name.endswith("Image Storage") and "Presentation" not in name


def _check_image(
    header: Header, pixels: _PixelElement | None, syntax: UID, max_image_pixels: int
) -> None:
    try:
        rows = _int(header, "Rows", 0)
        columns = _int(header, "Columns", 0)
        frames = _int(header, "NumberOfFrames", 1)
        samples = _int(header, "SamplesPerPixel", 1)
    except (TypeError, ValueError) as exc:
        raise InvalidInstanceError(f"The image dimensions cannot be read: {exc}") from exc
    if rows <= 0 or columns <= 0:
        raise NotAnImageError("The object is sent as an image but has no rows or columns.")
    if pixels is None:
        raise NotAnImageError("The object is sent as an image but has no pixel data.")
    count = rows * columns * max(frames, 1) * max(samples, 1)
    if count > max_image_pixels:
        raise ImageTooLargeError(
            f"The image has {rows} x {columns} pixels x {frames} frames x {samples} samples, "
            f"more than the {max_image_pixels} pixels accepted."
        )
    if syntax.is_encapsulated and pixels.tag == PIXEL_DATA:
        _check_encapsulated(pixels, syntax)
        return
    if pixels.length == UNDEFINED_LENGTH:
        raise InvalidInstanceError(
            "Encapsulated pixel data (undefined length) under the native (uncompressed) "
            f"transfer syntax {syntax.name}."
        )
    if pixels.remaining < pixels.length:
        raise InvalidInstanceError(
            f"The pixel data is truncated: {pixels.remaining} bytes left for {pixels.length}."
        )
    # Native (uncompressed) pixels: the element holds exactly the pixels it claims (plus
    # the one padding byte that makes an odd length even, PS3.5 7.1.1).
    try:
        bits = _int(header, "BitsAllocated", 0)
    except (TypeError, ValueError) as exc:
        raise InvalidInstanceError(f"Bits Allocated cannot be read: {exc}") from exc
    if bits <= 0:
        raise NotAnImageError("The image has pixel data but no Bits Allocated.")
    needed = (count * bits + 7) // 8
    if pixels.length not in (needed, needed + needed % 2):
        raise NotAnImageError(
            f"The pixel data holds {pixels.length} bytes, but {rows} x {columns} pixels x "
            f"{frames} frames x {samples} samples at {bits} bits are exactly {needed}."
        )


def _int(header: Header, keyword: str, default: int) -> int:
    """One integer attribute, ``default`` when absent or empty.

    Raises:
        TypeError: Several values.
        ValueError: Not an integer.
    """
    value = header.get(keyword)
    if isinstance(value, list):
        raise TypeError(f"{keyword} has {len(value)} values")
    return int(value or default)


def _check_encapsulated(pixels: _PixelElement, syntax: UID) -> None:
    """Walk the item headers of encapsulated pixel data (PS3.5 A.4) without reading pixels.

    The value is a Basic Offset Table item, one or more fragment items, then a sequence
    delimiter; a file that claims a compressed syntax but holds native pixels has a defined
    length instead, and fails here rather than in the worker.
    """
    if pixels.length != UNDEFINED_LENGTH:
        raise InvalidInstanceError(
            f"Native pixel data ({pixels.length} bytes, defined length) under the "
            f"encapsulated (compressed) transfer syntax {syntax.name}."
        )
    with pixels.buffer.getbuffer() as data:
        _walk_items(data, pixels.value_offset, pixels.end)


def _walk_items(data: memoryview, start: int, end: int) -> None:
    position = start
    items = 0
    while True:
        if position + 8 > end:
            raise InvalidInstanceError(
                "The encapsulated pixel data is truncated: it ends without a sequence delimiter."
            )
        group, element, length = struct.unpack_from("<HHI", data, position)
        tag = group << 16 | element
        position += 8
        if tag == SEQUENCE_DELIMITER and items >= 2:
            return
        if tag == ITEM and length != UNDEFINED_LENGTH and position + length > end:
            raise InvalidInstanceError(
                f"The encapsulated pixel data is truncated: an item of {length} bytes has "
                f"{end - position} left."
            )
        if tag != ITEM or length == UNDEFINED_LENGTH:
            what = "a Basic Offset Table item" if items == 0 else "a fragment item"
            if tag == SEQUENCE_DELIMITER:
                what = "at least one fragment"
            raise InvalidInstanceError(
                f"The encapsulated pixel data is malformed: expected {what} at byte "
                f"{position - 8 - start} of the pixel data, found "
                f"({group:04X},{element:04X}) with length {length}."
            )
        position += length
        items += 1


def _is_localizer(header: Header) -> bool:
    image_type = header.get("ImageType") or []
    values = image_type if isinstance(image_type, list) else [image_type]
    return any(str(value).strip().upper() in ("LOCALIZER", "SCOUT") for value in values)


def _numbers(header: Header, keyword: str, count: int) -> list[float] | None:
    """The values of a numeric attribute if it has exactly ``count`` finite numbers."""
    value = header.get(keyword)
    if value is None or value == "":
        return None
    values: list[str] | list[int] | list[str | int] = value if isinstance(value, list) else [value]
    try:
        numbers = [float(item) for item in values]
    except (TypeError, ValueError):
        return None
    if len(numbers) != count or not all(math.isfinite(number) for number in numbers):
        return None
    return numbers


def check_ct_attributes(header: Header) -> None:
    """Refuse a CT image that lacks what HU conversion and geometry rely on.

    Rescale Slope and Intercept (CT Image module), Rows, Columns, Bits Stored, Pixel
    Representation and Photometric Interpretation (Image Pixel), Pixel Spacing and Image
    Orientation and Position (Image Plane) are all Type 1: without them, raw stored values
    would be read as HU and slices could not be ordered or measured.

    Raises:
        MissingImageAttributeError: Naming every missing or unusable attribute.
    """
    problems: list[tuple[str, str]] = []
    slope = _numbers(header, "RescaleSlope", 1)
    if slope is None or slope[0] == 0:
        problems.append(("RescaleSlope", "missing" if slope is None else "zero"))
    if _numbers(header, "RescaleIntercept", 1) is None:
        problems.append(("RescaleIntercept", "missing"))
    for keyword in ("Rows", "Columns"):
        size = _numbers(header, keyword, 1)
        if size is None or size[0] <= 0:
            problems.append((keyword, "missing"))
    spacing = _numbers(header, "PixelSpacing", 2)
    if spacing is None or min(spacing) <= 0:
        problems.append(("PixelSpacing", "missing" if spacing is None else "not positive"))
    orientation = _numbers(header, "ImageOrientationPatient", 6)
    if orientation is None or not _unit_orthogonal(orientation):
        problems.append(
            ("ImageOrientationPatient", "missing" if orientation is None else "not orthonormal")
        )
    if _numbers(header, "ImagePositionPatient", 3) is None:
        problems.append(("ImagePositionPatient", "missing"))
    bits_stored = _numbers(header, "BitsStored", 1)
    bits_allocated = _numbers(header, "BitsAllocated", 1)
    if bits_stored is None or not 0 < bits_stored[0] <= (bits_allocated or [64.0])[0]:
        problems.append(("BitsStored", "missing" if bits_stored is None else "out of range"))
    representation = _numbers(header, "PixelRepresentation", 1)
    if representation is None or representation[0] not in (0, 1):
        problems.append(("PixelRepresentation", "missing"))
    photometric = str(header.get("PhotometricInterpretation") or "").strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        problems.append(("PhotometricInterpretation", photometric or "missing"))
    if problems:
        described = ", ".join(f"{keyword} ({why})" for keyword, why in problems)
        raise MissingImageAttributeError(
            f"CT attributes missing or unusable: {described}. HU conversion and geometry "
            "need them (Type 1).",
            keywords=tuple(keyword for keyword, _ in problems),
        )


def _unit_orthogonal(orientation: list[float]) -> bool:
    row, column = orientation[:3], orientation[3:]
    norms = [math.sqrt(sum(v * v for v in vector)) for vector in (row, column)]
    dot = sum(a * b for a, b in zip(row, column, strict=True))
    return all(abs(norm - 1.0) < 0.01 for norm in norms) and abs(dot) < 0.01
