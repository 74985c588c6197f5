"""Exceptions raised by the model package."""

from __future__ import annotations


class ModelError(Exception):
    """Base class of every error raised by the model package."""


class PreprocessError(ModelError):
    """The pixel data cannot be turned into a model input."""


class CheckpointError(ModelError):
    """A checkpoint exists but its files are invalid or do not match each other."""


class CheckpointNotFoundError(CheckpointError):
    """No checkpoint is present where one was expected."""


class DeviceUnavailableError(ModelError):
    """The requested compute device is not available on this machine."""


class PrecisionError(ModelError, ValueError):
    """The requested numeric precision is not one this code knows."""
