"""A classifier's prediction as the database records it: the verdict and its provenance, and a
multi-output model's further findings."""

from __future__ import annotations

from db.findings import FindingScore
from db.results import Verdict
from model.inference import Classifier, SeriesPrediction


def verdict_of(
    classifier: Classifier, prediction: SeriesPrediction, *, input_fingerprint: str
) -> Verdict:
    """The verdict of ``classifier`` on the instances whose fingerprint is given."""
    spec = classifier.spec
    return Verdict(
        probability=prediction.probability,
        suspected=prediction.suspected,
        threshold=prediction.threshold,
        model_name=spec.name,
        model_version=spec.version,
        model_sha256=classifier.sha256,
        input_fingerprint=input_fingerprint,
        precision=classifier.precision,
        device=str(classifier.device),
        finding_scheme=spec.finding.scheme,
        finding_value=spec.finding.value,
        finding_meaning=spec.finding.meaning,
        finding_name=spec.finding.short_name,
    )


def further_findings_of(prediction: SeriesPrediction) -> list[FindingScore]:
    """A multi-output model's other findings and their probabilities, in its spec's order."""
    return [
        FindingScore(
            finding_scheme=other.finding.scheme,
            finding_value=other.finding.value,
            finding_meaning=other.finding.meaning,
            finding_name=other.finding.short_name,
            probability=other.probability,
        )
        for other in prediction.further_findings
    ]
