"""The row types that the data-access functions return, for annotations outside db.

Code outside db reads these objects' attributes; it never queries them itself (the queries live
in ``db.receiving``, ``db.jobs``, ``db.results``, ``db.exports`` and ``db.retention``).
"""

from db.models import (
    ApiToken,
    AuditEntry,
    Export,
    Heartbeat,
    Instance,
    Job,
    Notification,
    Result,
    ResultFinding,
    Series,
    SliceScore,
    Study,
)

__all__ = [
    "ApiToken",
    "AuditEntry",
    "Export",
    "Heartbeat",
    "Instance",
    "Job",
    "Notification",
    "Result",
    "ResultFinding",
    "Series",
    "SliceScore",
    "Study",
]
