"""`python -m stroke_triage` runs the CLI."""

from stroke_triage.cli import main

raise SystemExit(main())
