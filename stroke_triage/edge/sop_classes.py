"""The CT SOP classes: which instances the listener selects and the worker classifies."""

from __future__ import annotations

from pydicom.uid import UID, CTImageStorage, EnhancedCTImageStorage

CT_IMAGE_STORAGE: UID = CTImageStorage
"""Single-frame CT Image Storage: the only kind the classifier reads."""
ENHANCED_CT_IMAGE_STORAGE: UID = EnhancedCTImageStorage
"""Multi-frame Enhanced CT: stored, but not classified (for now)."""
CLASSIFIABLE_SOP_CLASSES: frozenset[str] = frozenset({CT_IMAGE_STORAGE})
"""SOP classes whose instances are classified."""
