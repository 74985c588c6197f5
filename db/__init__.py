"""stroke-triage: db. SQLAlchemy models, Alembic migrations and keyword-only data access.

Imports nothing of ours; the listener and the worker use it. This package re-exports nothing,
so that importing one of its light modules (``db.enums``) never loads SQLAlchemy or Alembic.

Modules:
    engine: engines, session factories, migrations and the schema revision check.
    receiving: studies, series and instances as the listener stores them.
    jobs: the job outbox and each job's life cycle.
    results: classification results and the results overview.
    exports: the outbox of DICOM objects sent back to the PACS.
    retention: which series may have their stored files deleted.
    rows: the row types those functions return, for annotations outside db.
    enums, errors, models, types: states, exceptions, the ORM models and column types.
"""
