"""The CT SOP classes: which instances the listener selects and the worker classifies.

Plain ``str`` constants (equal to pydicom's ``UID`` values), so that importing the edge, and
with it the settings, never imports pydicom.
"""

from __future__ import annotations

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
"""Single-frame CT Image Storage: the only kind the classifier reads."""
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
"""Multi-frame Enhanced CT: stored, but not classified (for now)."""
LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"
"""Multi-frame CT converted from single-frame slices (by a PACS or archive): stored, but not
classified (for now)."""
MULTI_FRAME_CT_SOP_CLASSES: frozenset[str] = frozenset(
    {ENHANCED_CT_IMAGE_STORAGE, LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE}
)
"""The multi-frame CT classes: a CT image, but not one the classifier reads."""
CLASSIFIABLE_SOP_CLASSES: frozenset[str] = frozenset({CT_IMAGE_STORAGE})
"""SOP classes whose instances are classified."""
