"""Errors the listener raises; the DICOM edge maps each to a status code."""


class ListenerError(Exception):
    """Base class of the listener's errors."""


class InvalidUIDError(ListenerError):
    """A UID is not a valid DICOM UID, so it must never become part of a path."""


class InvalidInstanceError(ListenerError):
    """A received object cannot be understood as a DICOM instance we may store."""


class NotAnImageError(InvalidInstanceError):
    """An object sent as an image has no image (no rows, columns or pixel data)."""


class MissingImageAttributeError(InvalidInstanceError):
    """A CT image lacks (or has an unusable) Type 1 attribute that HU or geometry relies on."""

    def __init__(self, message: str, *, keywords: tuple[str, ...]) -> None:
        super().__init__(message)
        self.keywords = keywords
        """The attributes at fault (DICOM keywords)."""


class ImageTooLargeError(InvalidInstanceError):
    """An image's dimensions are beyond the configured limit (absurd or hostile)."""


class OutOfResourcesError(ListenerError):
    """Storage is (nearly) full or the queue is too long: refuse for now, accept later."""


class DispatchError(ListenerError):
    """A task could not be handed to the broker (it stays in the outbox)."""
