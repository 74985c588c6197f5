"""The fast read of a received data set's header: only what the listener checks.

Little endian data sets (nearly all) are walked element by element on the bytes as they
arrived, converting only the attributes in ``WANTED`` and stopping at the pixel data, which is
never decoded; anything unusual is read by pydicom instead, which also words the error.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from listener.errors import InvalidInstanceError

PIXEL_DATA = 0x7FE00010
#: Pixel Data, Float Pixel Data and Double Float Pixel Data.
PIXEL_TAGS = frozenset({PIXEL_DATA, 0x7FE00008, 0x7FE00009})
UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM = 0xFFFEE000
SEQUENCE_DELIMITER = 0xFFFEE0DD
#: Explicit VRs whose element header has a 32-bit length (12 bytes in all).
LONG_LENGTH_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"})


@dataclass(frozen=True)
class PixelElement:
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


#: The attributes the listener reads: keyword, tag, VR (for implicit VR) and the value's kind.
WANTED: dict[int, tuple[str, str]] = {
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
_KEYWORDS = tuple(keyword for keyword, _ in WANTED.values())
_ITEM_DELIMITER = 0xFFFEE00D
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "SH", "TM", "UI"})

Value = str | int | list[str] | list[int]
Header = dict[str, Value]
"""The attributes the listener reads, by keyword: text (one value), a list (several), or int."""


class UnusualError(Exception):
    """The fast scan met something it leaves to pydicom (the slower, general parser)."""


def as_text(value: Value) -> str:
    """One value as text; several values joined as DICOM encodes them (backslash)."""
    if isinstance(value, list):
        return "\\".join(str(item) for item in value)
    return str(value)


def parse_header(stream: bytes | BytesIO, syntax: UID) -> tuple[Header, PixelElement | None]:
    """Read the wanted attributes; return them and where the pixel data element lies.

    Little endian data sets (nearly all) are scanned element by element with ``struct``,
    converting only the attributes in ``WANTED``; anything unusual (big endian, an unknown
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
            return scan(buffer, implicit=syntax.is_implicit_VR)
        except UnusualError:
            pass
    return parse_with_pydicom(buffer, syntax)


def scan(buffer: BytesIO, *, implicit: bool) -> tuple[Header, PixelElement | None]:
    """The fast path of :func:`parse_header`: top-level elements only, sequences skipped."""
    header: Header = {}
    with buffer.getbuffer() as data:
        end = data.nbytes
        position = 0
        while position < end:
            if position + 8 > end:
                raise UnusualError
            group, element = struct.unpack_from("<HH", data, position)
            tag = group << 16 | element
            if implicit:
                vr = WANTED[tag][1] if tag in WANTED else ""
                (length,) = struct.unpack_from("<I", data, position + 4)
                start = position + 8
            else:
                vr = bytes(data[position + 4 : position + 6]).decode("latin-1")
                if vr in LONG_LENGTH_VRS:
                    if position + 12 > end:
                        raise UnusualError
                    (length,) = struct.unpack_from("<I", data, position + 8)
                    start = position + 12
                else:
                    (length,) = struct.unpack_from("<H", data, position + 6)
                    start = position + 8
            if tag in PIXEL_TAGS:
                pixels = PixelElement(
                    tag=tag, length=length, value_offset=start, buffer=buffer, end=end
                )
                return header, pixels
            if length == UNDEFINED_LENGTH:
                if tag in WANTED or (not implicit and vr != "SQ"):
                    raise UnusualError
                position = _skip_sequence(data, start, end, implicit=implicit)
                continue
            if start + length > end:
                raise UnusualError
            if tag in WANTED:
                keyword, expected = WANTED[tag]
                if vr != expected:
                    raise UnusualError
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
            raise UnusualError
        group, element, length = struct.unpack_from("<HHI", data, position)
        tag = group << 16 | element
        position += 8
        if tag == SEQUENCE_DELIMITER:
            return position
        if tag != ITEM:
            raise UnusualError
        if length != UNDEFINED_LENGTH:
            position += length
            continue
        position = _skip_item(data, position, end, implicit=implicit)


def _skip_item(data: memoryview, start: int, end: int, *, implicit: bool) -> int:
    """Skip the elements of an item of undefined length, up to its delimiter."""
    position = start
    while True:
        if position + 8 > end:
            raise UnusualError
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
                raise UnusualError
            position = _skip_sequence(data, position, end, implicit=implicit)
        else:
            position += length
        if position > end:
            raise UnusualError


def _value(raw: memoryview, vr: str) -> Value:
    """Convert one wanted value: text (split on backslash when several) or unsigned shorts."""
    if vr == "US":
        if len(raw) % 2:
            raise UnusualError
        numbers = [number for (number,) in struct.iter_unpack("<H", raw)]
        if not numbers:
            return ""
        return numbers[0] if len(numbers) == 1 else numbers
    text = bytes(raw).decode("latin-1")
    if vr == "UI":
        text = text.rstrip("\x00")
    parts = [part.strip(" \x00") for part in text.split("\\")]
    return parts[0] if len(parts) == 1 else parts


def parse_with_pydicom(buffer: BytesIO, syntax: UID) -> tuple[Header, PixelElement | None]:
    """The general path of :func:`parse_header`: pydicom reads up to the pixel data."""
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
    element = PixelElement(
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
