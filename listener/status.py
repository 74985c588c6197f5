"""The DIMSE status codes the listener answers, and the error each one stands for.

Every refusal also carries an Error Comment (0000,0902) saying why; a refused CT image names
the attributes at fault in Offending Element (0000,0901).
"""

from enum import IntEnum


class StoreStatus(IntEnum):
    """C-STORE response statuses (PS3.4 B.2.3; 0xCxxx is 'cannot understand')."""

    SUCCESS = 0x0000
    """Stored durably (temporary file, fsync, rename)."""
    OUT_OF_RESOURCES = 0xA700
    """Storage nearly full, a write failed, or the database did not take the record: retry."""
    NOT_AN_IMAGE = 0xA900
    """Data set does not match SOP class: sent as an image, but has no rows, columns or pixel
    data, or native pixel data of the wrong length (what a file truncated in its pixel data
    becomes once a sender that reads it with pydicom, such as pynetdicom's storescu, re-encodes
    it: the data set is well formed, its pixels are not all there)."""
    MISSING_CT_ATTRIBUTE = 0xA901
    """Data set does not match SOP class: a CT image (not a localizer) lacks a Type 1 attribute
    that HU conversion or geometry needs (Rescale Slope/Intercept, Pixel Spacing, Image
    Orientation/Position, Bits Stored, Pixel Representation, Photometric Interpretation), or
    holds an unusable value."""
    CANNOT_UNDERSTAND = 0xC210
    """The data set cannot be parsed (the stream ends inside an element: truncated as sent),
    lacks Study or Series Instance UID, or its pixel data's encapsulation does not match the
    transfer syntax. pynetdicom's own Storage SCP answers 0xC210 to a data set it cannot
    decode."""
    INVALID_UID = 0xC212
    """A UID that names the stored file is not a valid DICOM UID."""
    IMAGE_TOO_LARGE = 0xC213
    """Rows x columns x frames x samples beyond ``max_image_pixels``."""
