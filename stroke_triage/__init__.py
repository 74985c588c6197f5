"""stroke-triage: stroke_triage."""
