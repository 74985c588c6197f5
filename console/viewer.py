"""The link to a study in the site's viewer (OHIF, Orthanc Explorer 2, Weasis...).

``api.viewer_url`` is a URL template: ``{study_instance_uid}``, ``{series_instance_uid}`` and
``{accession_number}`` are replaced by the series' values, percent-encoded. Examples (the
console's documentation has more):

- OHIF: ``https://pacs.example.org/ohif/viewer?StudyInstanceUIDs={study_instance_uid}``
- Orthanc Explorer 2: ``https://pacs.example.org/ui/app/#/filtered-studies?StudyInstanceUID=
  {study_instance_uid}&expand=series``
"""

from __future__ import annotations

import string
from urllib.parse import quote

#: The placeholders a viewer URL may hold.
PLACEHOLDERS = frozenset({"study_instance_uid", "series_instance_uid", "accession_number"})
#: The URL schemes a viewer link may use (weasis:// starts the Weasis desktop viewer).
SCHEMES = ("http://", "https://", "weasis://")


def _fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def check_viewer_template(template: str) -> None:
    """Refuse a viewer URL with an unknown placeholder or scheme (empty: no link, fine).

    Raises:
        ValueError: Naming the setting, what is wrong, and the placeholders it may use.
    """
    if not template:
        return
    allowed = ", ".join("{" + name + "}" for name in sorted(PLACEHOLDERS))
    try:
        names = _fields(template)
    except ValueError as exc:
        raise ValueError(
            f"api.viewer_url is not a valid template ({exc}); write braces only around the "
            f"placeholders {allowed}, and double any other brace."
        ) from exc
    unknown = sorted({name for name in names if name not in PLACEHOLDERS})
    if unknown:
        raise ValueError(
            f"api.viewer_url names {', '.join('{' + n + '}' for n in unknown)}; it may use "
            f"only {allowed}."
        )
    if not template.lower().startswith(SCHEMES):
        raise ValueError(
            f"api.viewer_url must start with {', '.join(SCHEMES)}, not {template[:20]!r}."
        )


def viewer_link(
    template: str,
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    accession_number: str | None,
) -> str | None:
    """The viewer URL of one series; None without a template, or when it needs an accession
    number that is not known (the stored files were purged)."""
    if not template:
        return None
    if "accession_number" in _fields(template) and not accession_number:
        return None
    values = {
        "study_instance_uid": study_instance_uid,
        "series_instance_uid": series_instance_uid,
        "accession_number": accession_number or "",
    }
    return template.format(**{name: quote(value, safe="") for name, value in values.items()})
