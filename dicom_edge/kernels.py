"""Reconstruction kernels: which vendor kernels give the soft-tissue (brain) images the model reads.

A head CT study often holds the same slices reconstructed twice, with a brain kernel and with a
bone kernel. Convolution Kernel (0018,1210) says which, in each vendor's own words; this module
holds the one table of them. A site adds or corrects patterns in its settings
(``listener.kernel_families``), which are tried before the table. A series whose kernel matches
no pattern (or is not stated) is judged by words in its Series Description.

Standard library only: the settings import it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class KernelFamily(StrEnum):
    """What a reconstruction kernel is made for."""

    SOFT = "soft"
    """Soft tissue or brain (smooth to medium): what the model was made for."""
    BONE = "bone"
    """Bone (sharp, high resolution)."""
    LUNG = "lung"
    """Lung (sharp)."""
    SHARP = "sharp"
    """Other edge-enhancing kernels (detail, edge)."""

    @property
    def readable(self) -> bool:
        """Whether the model reads images of this kernel (soft tissue only)."""
        return self is KernelFamily.SOFT

    @property
    def words(self) -> str:
        """How a reason names it: ``soft-tissue``, ``bone``, ``lung`` or ``sharp``."""
        return "soft-tissue" if self is KernelFamily.SOFT else self.value


@dataclass(frozen=True)
class KernelPattern:
    """One row of the kernel table: a case-insensitive glob pattern, its family, an example."""

    pattern: str
    family: KernelFamily
    vendor: str


_SOFT, _BONE = KernelFamily.SOFT, KernelFamily.BONE
_LUNG, _SHARP = KernelFamily.LUNG, KernelFamily.SHARP

KERNEL_TABLE: tuple[KernelPattern, ...] = (
    # Siemens: a letter for the use (H head, J head on newer scanners, B body, Q quantitative,
    # I iterative), r for ADMIRE/SAFIRE, a sharpness number (up to 4x smooth to medium, 5x and
    # above sharp), a suffix: H31s, J40s, Hr40f are brain kernels; H70h, Hr64, B70f are not.
    KernelPattern("H[0-4][0-9]*", _SOFT, "Siemens head H10s-H45s"),
    KernelPattern("HR[0-4][0-9]*", _SOFT, "Siemens head Hr36-Hr44"),
    KernelPattern("J[0-4][0-9]*", _SOFT, "Siemens head J30s-J45s"),
    KernelPattern("JR[0-4][0-9]*", _SOFT, "Siemens head Jr40"),
    KernelPattern("B[0-4][0-9]*", _SOFT, "Siemens body B20f-B45f"),
    KernelPattern("BR[0-4][0-9]*", _SOFT, "Siemens body Br36-Br44"),
    KernelPattern("BV[0-4][0-9]*", _SOFT, "Siemens vascular Bv36-Bv44"),
    KernelPattern("QR[0-4][0-9]*", _SOFT, "Siemens quantitative Qr36-Qr44"),
    KernelPattern("I[0-4][0-9]*", _SOFT, "Siemens iterative I30f-I44f"),
    KernelPattern("D[0-4][0-9]*", _SOFT, "Siemens dual energy D30f-D45f"),
    KernelPattern("H[5-9][0-9]*", _BONE, "Siemens head H60s, H70h, H80s"),
    KernelPattern("HR[5-9][0-9]*", _BONE, "Siemens head Hr60-Hr68"),
    KernelPattern("J[5-9][0-9]*", _BONE, "Siemens head J70h"),
    KernelPattern("JR[5-9][0-9]*", _BONE, "Siemens head Jr64"),
    KernelPattern("BL[0-9]*", _LUNG, "Siemens lung Bl57, Bl64"),
    KernelPattern("B[5-9][0-9]*", _SHARP, "Siemens body B60f-B80f"),
    KernelPattern("BR[5-9][0-9]*", _SHARP, "Siemens body Br59-Br69"),
    KernelPattern("I[5-9][0-9]*", _SHARP, "Siemens iterative I70f"),
    KernelPattern("D[5-9][0-9]*", _SHARP, "Siemens dual energy D70f"),
    KernelPattern("U[0-9]*", _BONE, "Siemens ultra-high resolution U70u, U90u"),
    # GE: words. STANDARD (STD, STD+), SOFT and BRAIN for the brain; BONE, BONEPLUS, LUNG,
    # EDGE and DETAIL (edge-enhancing) are not. HD variants keep the word.
    KernelPattern("*BONE*", _BONE, "GE BONE, BONEPLUS, HD BONE"),
    KernelPattern("*LUNG*", _LUNG, "GE and Canon LUNG"),
    KernelPattern("*EDGE*", _SHARP, "GE EDGE"),
    KernelPattern("*DETAIL*", _SHARP, "GE DETAIL"),
    KernelPattern("*SHARP*", _SHARP, "Canon BODY SHARP"),
    KernelPattern("*STANDARD*", _SOFT, "GE STANDARD, HD STANDARD"),
    KernelPattern("STD*", _SOFT, "GE STD, STD+"),
    KernelPattern("*SOFT*", _SOFT, "GE SOFT"),
    KernelPattern("*BRAIN*", _SOFT, "GE BRAIN, Canon BRAIN"),
    # Philips: letters. UA, UB, UC (brain) and A, B, C (smooth to standard) are soft; D, E,
    # EA-EC, YA-YF (bone) and L (lung) are not.
    KernelPattern("U[ABC]", _SOFT, "Philips brain UA, UB, UC"),
    KernelPattern("[ABC]", _SOFT, "Philips A, B, C"),
    KernelPattern("D", _SHARP, "Philips D"),
    KernelPattern("E", _BONE, "Philips E"),
    KernelPattern("E[ABC]", _BONE, "Philips EA, EB, EC"),
    KernelPattern("Y[A-F]", _BONE, "Philips YA-YF"),
    KernelPattern("L", _LUNG, "Philips L"),
    # Canon (Toshiba): FC, then a number. FC0x-FC2x abdomen, body and head (FC2x: brain) are
    # soft; FC3x (head bone), FC5x (lung) and FC8x (high-resolution bone) are not.
    KernelPattern("FC[0-2][0-9]*", _SOFT, "Canon FC01-FC28"),
    KernelPattern("FC3[0-9]*", _BONE, "Canon FC30, FC31, FC35"),
    KernelPattern("FC5[0-9]*", _LUNG, "Canon FC50-FC56"),
    KernelPattern("FC8[0-9]*", _BONE, "Canon FC80-FC86"),
)
"""Vendor kernels by family; the first pattern that matches the kernel (upper case) decides."""

DESCRIPTION_WORDS: tuple[tuple[str, KernelFamily], ...] = (
    ("BONE", _BONE),
    ("LUNG", _LUNG),
    ("SHARP", _SHARP),
    ("SOFT", _SOFT),
    ("BRAIN", _SOFT),
)
"""Words of a Series Description that name the reconstruction when the kernel does not; the
sharp ones first (``BRAIN BONE`` is a bone series)."""


@dataclass(frozen=True)
class Reconstruction:
    """What a series' reconstruction is, and what said so.

    Attributes:
        family: The kernel's family; None when neither the kernel nor the description says.
        kernel: The Convolution Kernel as sent (its first value), or None.
        by_description: The family comes from words in the series description.
    """

    family: KernelFamily | None
    kernel: str | None
    by_description: bool = False

    def describe(self) -> str:
        """``bone kernel BONEPLUS``, ``bone reconstruction (by its series description)``,
        ``kernel H99x`` (not in any table), ``kernel not stated``."""
        if self.family is None:
            return f"kernel {self.kernel}" if self.kernel else "kernel not stated"
        if self.by_description:
            return f"{self.family.words} reconstruction (by its series description)"
        return f"{self.family.words} kernel {self.kernel}"


def normalise(kernel: str) -> str:
    """A kernel as the table matches it: upper case, inner spaces single, ends stripped."""
    return " ".join(kernel.upper().split())


def kernel_family(
    kernel: str | None, *, site_kernels: Mapping[str, KernelFamily] | None = None
) -> KernelFamily | None:
    """The family of a Convolution Kernel: the site's patterns first, then :data:`KERNEL_TABLE`.

    Args:
        kernel: The kernel as sent (its first value); None or empty when not stated.
        site_kernels: The site's own patterns (``listener.kernel_families``).

    Returns:
        The family, or None when no pattern matches.
    """
    if not kernel or not kernel.strip():
        return None
    text = normalise(kernel)
    for pattern, family in (site_kernels or {}).items():
        if fnmatch.fnmatchcase(text, normalise(pattern)):
            return family
    for row in KERNEL_TABLE:
        if fnmatch.fnmatchcase(text, row.pattern):
            return row.family
    return None


def description_family(description: str | None) -> KernelFamily | None:
    """The family that words in a Series Description name (``HEAD 5mm BONE``), or None."""
    text = (description or "").upper()
    return next((family for word, family in DESCRIPTION_WORDS if word in text), None)


def reconstruction(
    kernel: str | None,
    description: str | None,
    *,
    site_kernels: Mapping[str, KernelFamily] | None = None,
) -> Reconstruction:
    """What a series' reconstruction is: by its kernel, else by its description.

    The kernel is the scanner's own statement: when it is in a table, it wins over words in the
    description (a soft-kernel series described ``BONE WINDOW`` is still soft tissue).
    """
    stated = kernel.strip() if kernel else None
    family = kernel_family(stated, site_kernels=site_kernels)
    if family is not None:
        return Reconstruction(family, stated)
    by_words = description_family(description)
    return Reconstruction(by_words, stated or None, by_description=by_words is not None)
