"""The DIMSE status codes the listener answers, and the error each one stands for."""

from enum import IntEnum


class StoreStatus(IntEnum):
    """C-STORE response statuses (PS3.4 B.2.3; 0xCxxx is 'cannot understand')."""

    SUCCESS = 0x0000
    """Stored durably (temporary file, fsync, rename)."""
    OUT_OF_RESOURCES = 0xA700
    """Storage nearly full, a write failed, or the database did not take the record: retry."""
    NOT_AN_IMAGE = 0xA900
    """Sent as an image, but has no rows, columns or pixel data (data set does not match)."""
    CANNOT_UNDERSTAND = 0xC210
    """The data set cannot be parsed, is truncated, or lacks Study or Series Instance UID."""
    INVALID_UID = 0xC212
    """A UID that names the stored file is not a valid DICOM UID."""
    IMAGE_TOO_LARGE = 0xC213
    """Rows x columns x frames x samples beyond ``max_image_pixels``."""
