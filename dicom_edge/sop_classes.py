"""The CT SOP classes: which instances the listener selects and the worker classifies.

Plain ``str`` constants (equal to pydicom's ``UID`` values), so that importing the edge, and
with it the settings, never imports pydicom.
"""

from __future__ import annotations

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
"""Single-frame CT Image Storage: the only kind the classifier reads."""
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
"""Multi-frame Enhanced CT: stored, but not classified (for now)."""
CLASSIFIABLE_SOP_CLASSES: frozenset[str] = frozenset({CT_IMAGE_STORAGE})
"""SOP classes whose instances are classified."""
