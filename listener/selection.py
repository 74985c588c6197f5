"""Which completed series are worth classifying: axial CT of the head with enough slices."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import UID

from stroke_triage.edge import CLASSIFIABLE_SOP_CLASSES, ENHANCED_CT_IMAGE_STORAGE

HEAD_WORDS = ("HEAD", "BRAIN", "SKULL", "CEREBR", "NEURO", "CRANI", "STROKE")
OTHER_BODY_PARTS = ("CHEST", "ABDOMEN", "PELVIS", "SPINE", "LSPINE", "CSPINE", "TSPINE", "KNEE")
AXIAL_TOLERANCE = 0.8  # |normal . z| above this counts as axial (gantry tilt up to ~35 degrees)


@dataclass(frozen=True)
class Selection:
    """The decision for one series: classify it, or skip it and say why."""

    classify: bool
    reason: str


def select_series(header: Dataset, *, instance_count: int, min_slices: int) -> Selection:
    """Decide from one instance's header and the series size whether to classify it."""
    sop_class = UID(str(header.get("SOPClassUID", "")))
    if sop_class == ENHANCED_CT_IMAGE_STORAGE:
        # Stored, but the classifier reads single-frame slices only (for now).
        return Selection(False, "multi-frame Enhanced CT is stored but not classified")
    if sop_class not in CLASSIFIABLE_SOP_CLASSES:
        name = sop_class.name if sop_class else "unknown"
        return Selection(False, f"SOP class {name} is not a CT image")
    if str(header.get("Modality", "")).upper() != "CT":
        return Selection(False, f"modality {header.get('Modality', '')!s} is not CT")
    image_type = [str(value).upper() for value in _as_list(header.get("ImageType", []))]
    if "LOCALIZER" in image_type or "SCOUT" in image_type:
        return Selection(False, "localizer (scout) image")
    if not _is_axial(header):
        return Selection(False, "not an axial series (reformat or unknown orientation)")
    if not _is_head(header):
        return Selection(False, "body part is not the head or brain")
    if instance_count < min_slices:
        return Selection(False, f"{instance_count} slices, fewer than the {min_slices} needed")
    return Selection(True, "axial head CT")


def _as_list(value: object) -> list[object]:
    if isinstance(value, str | bytes):
        return [value]
    if isinstance(value, Sequence):
        return list(value)
    return [value]


def _is_axial(header: Dataset) -> bool:
    orientation = header.get("ImageOrientationPatient")
    if orientation is None:
        orientation = _shared_orientation(header)
    if orientation is None or len(orientation) != 6:
        return False
    row = [float(v) for v in orientation[:3]]
    col = [float(v) for v in orientation[3:]]
    normal_z = row[0] * col[1] - row[1] * col[0]
    return abs(normal_z) >= AXIAL_TOLERANCE


def _shared_orientation(header: Dataset) -> list[float] | None:
    """The orientation of an Enhanced CT object, from its shared functional groups."""
    try:
        group = header.SharedFunctionalGroupsSequence[0]
        return list(group.PlaneOrientationSequence[0].ImageOrientationPatient)
    except (AttributeError, IndexError, KeyError):
        return None


def _is_head(header: Dataset) -> bool:
    texts = " ".join(
        str(header.get(keyword, "")).upper()
        for keyword in ("BodyPartExamined", "StudyDescription", "SeriesDescription", "ProtocolName")
    )
    if any(word in texts for word in HEAD_WORDS):
        return True
    body_part = str(header.get("BodyPartExamined", "")).upper()
    # Many scanners leave the body part empty; only refuse a series that names another part.
    return not body_part or body_part not in OTHER_BODY_PARTS
