"""stroke-triage: listener."""
