"""stroke-triage: worker."""
