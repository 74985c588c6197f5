"""The read of a received data set's header: only what the listener checks.

pydicom reads the bytes as they arrived (in memory, or in the file they were written to),
keeping only the attributes in ``WANTED`` and stopping at the pixel data, which is never read;
it also words the error for a malformed data set.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from io import BytesIO
from typing import BinaryIO

from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.filereader import read_dataset, read_preamble
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
    source: BinaryIO
    """What the data set was read from (memory or its file), to read item headers later."""
    end: int

    @property
    def remaining(self) -> int:
        """Bytes from the start of the value to the end of the data set."""
        return self.end - self.value_offset


#: The attributes the listener reads, by keyword.
WANTED: dict[str, int] = {
    "ImageType": 0x00080008,
    "SOPClassUID": 0x00080016,
    "Modality": 0x00080060,
    "SeriesDescription": 0x0008103E,
    "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E,
    "ImagePositionPatient": 0x00200032,
    "ImageOrientationPatient": 0x00200037,
    "SamplesPerPixel": 0x00280002,
    "PhotometricInterpretation": 0x00280004,
    "NumberOfFrames": 0x00280008,
    "Rows": 0x00280010,
    "Columns": 0x00280011,
    "PixelSpacing": 0x00280030,
    "BitsAllocated": 0x00280100,
    "BitsStored": 0x00280101,
    "PixelRepresentation": 0x00280103,
    "RescaleIntercept": 0x00281052,
    "RescaleSlope": 0x00281053,
}
_WANTED_TAGS: list[BaseTag | int] = list(WANTED.values())

Value = str | int | list[str] | list[int]
Header = dict[str, Value]
"""The attributes the listener reads, by keyword: text (one value), a list (several), or int."""


#: What pydicom raises for bytes that end inside an element or hold an impossible length:
#: BytesLengthException (a value shorter than its VR needs) and struct.error (a header cut
#: short) included, so that every cut point is refused with 0xC210, never a 0xC211 traceback.
_UNPARSEABLE: tuple[type[Exception], ...] = (
    InvalidDicomError,
    BytesLengthException,
    struct.error,
    EOFError,
    ValueError,
    OSError,
)
#: The same, and what converting a malformed value raises.
_UNCONVERTIBLE: tuple[type[Exception], ...] = (*_UNPARSEABLE, KeyError, TypeError)


def as_text(value: Value) -> str:
    """One value as text; several values joined as DICOM encodes them (backslash)."""
    if isinstance(value, list):
        return "\\".join(str(item) for item in value)
    return str(value)


def parse_header(stream: bytes | BinaryIO, syntax: UID) -> tuple[Header, PixelElement | None]:
    """Read the wanted attributes; return them and where the pixel data element lies.

    Args:
        stream: The data set: bytes, or a binary stream (in memory, or a file) at its first
            byte; it ends where the stream ends.
        syntax: The transfer syntax it is encoded in.
    """
    source: BinaryIO = BytesIO(stream) if isinstance(stream, bytes) else stream
    if syntax == DeflatedExplicitVRLittleEndian:
        try:
            source = BytesIO(zlib.decompress(source.read(), -zlib.MAX_WBITS))
        except zlib.error as exc:
            raise InvalidInstanceError(f"The deflated data set cannot be inflated: {exc}") from exc
    if not syntax.is_transfer_syntax:
        raise InvalidInstanceError(f"The transfer syntax {syntax} is not known.")
    return _read(source, syntax)


#: How much of a received file is read at once for its header: a CT header is a few KiB
#: (tens with large private groups); a longer one is read from the file instead.
HEAD_BYTES = 65536


def parse_file(file: BinaryIO, syntax: UID) -> tuple[Header, PixelElement | None]:
    """:func:`parse_header` on a received file (preamble, file meta, the data set).

    The file's first :data:`HEAD_BYTES` are read once and parsed in memory (pydicom asks a
    file for its position at every element, a system call each); the pixel data is never read,
    only the item headers of encapsulated pixel data, from the file. When the header does not
    end within those bytes, it is read from the file itself.

    Raises:
        InvalidInstanceError: As :func:`parse_header`, or the file has no readable file meta.
    """
    size = os.fstat(file.fileno()).st_size
    head = BytesIO(file.read(HEAD_BYTES))
    whole = size <= HEAD_BYTES
    if syntax != DeflatedExplicitVRLittleEndian:  # (inflated from the whole file below)
        try:
            skip_file_meta(head)
            header, pixels = _read(head, syntax, source=file, end=size)
        except InvalidInstanceError:
            if whole:
                raise
        else:
            if pixels is not None or whole:
                return header, pixels
    file.seek(0)
    skip_file_meta(file)
    return parse_header(file, syntax)


def skip_file_meta(file: BinaryIO) -> None:
    """Move a DICOM file (at its start) to the first byte of its data set, past the file meta.

    Raises:
        InvalidInstanceError: It has no preamble and ``DICM``, or no readable file meta.
    """
    try:
        read_preamble(file, False)
        read_dataset(file, False, True, stop_when=lambda tag, vr, length: tag >> 16 != 0x0002)
    except _UNPARSEABLE as exc:
        raise InvalidInstanceError(f"The received file cannot be read: {exc}") from exc


def _read(
    buffer: BinaryIO, syntax: UID, *, source: BinaryIO | None = None, end: int | None = None
) -> tuple[Header, PixelElement | None]:
    """Read ``buffer`` from where it is; ``source`` and ``end``: the stream it is the start of
    (the same offsets) and where that ends, if ``buffer`` holds only its first bytes."""
    found: list[tuple[int, str | None, int]] = []

    def at_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
        if tag in PIXEL_TAGS:
            found.append((int(tag), vr, length))
            return True
        return False

    try:
        dataset = read_dataset(
            buffer,
            syntax.is_implicit_VR,
            syntax.is_little_endian,
            stop_when=at_pixels,
            specific_tags=_WANTED_TAGS,  # the others' headers are read, their values skipped
        )
        # Convert the values we use here, so that a malformed one fails here, not later.
        header = _plain(dataset)
    except _UNCONVERTIBLE as exc:
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
        source=buffer if source is None else source,
        end=_size(buffer) if end is None else end,
    )
    return header, element


def _size(source: BinaryIO) -> int:
    """Where the data set ends: the end of the stream."""
    if isinstance(source, BytesIO):
        return source.getbuffer().nbytes
    return os.fstat(source.fileno()).st_size


def _plain(dataset: Dataset) -> Header:
    """The wanted attributes of a data set as plain values, converted (and so checked) now.

    Each raw element is converted as ``dataset[tag]`` would (same function, same character
    set), without the rest of a data set's item access: half the time of the header read.
    """
    header: Header = {}
    encoding = dataset.original_character_set
    for keyword, tag in WANTED.items():
        raw = dataset.get_item(tag)
        if raw is None:
            continue
        element = (
            convert_raw_data_element(raw, encoding=encoding, ds=dataset)
            if isinstance(raw, RawDataElement)
            else raw
        )
        value = element.value
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
