"""A further finding of a multi-output model, as stored with a verdict and as listed."""

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from sqlalchemy.orm import Session

from db._query import insert
from db.models import FurtherFindingColumns


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


def score_of(row: FurtherFindingColumns) -> FindingScore:
    """The finding and probability of a stored row."""
    return FindingScore(
        finding_scheme=row.finding_scheme,
        finding_value=row.finding_value,
        finding_meaning=row.finding_meaning,
        finding_name=row.finding_name,
        probability=row.probability,
    )


def insert_further_findings(
    session: Session,
    table: type[FurtherFindingColumns],
    findings: Sequence[FindingScore],
    **verdict: int,
) -> None:
    """Store ``findings`` in ``table`` in the model's order, each with its ``verdict`` key."""
    if findings:
        session.execute(
            insert(session, table).values(
                [
                    {**verdict, "position": position, **asdict(finding)}
                    for position, finding in enumerate(findings, start=1)
                ]
            )
        )
