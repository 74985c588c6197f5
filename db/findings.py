"""A further finding of a multi-output model, as stored with a result and as listed."""

from dataclasses import dataclass


@dataclass(frozen=True)
class FindingScore:
    """A further finding of a multi-output model and its series-level probability.

    It has no threshold and no verdict of its own: the verdict is the result's own finding.
    """

    finding_scheme: str
    finding_value: str
    finding_meaning: str
    finding_name: str
    probability: float
