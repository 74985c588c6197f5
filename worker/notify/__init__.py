"""Notifications to the stroke team: webhook, e-mail and HL7 v2, through the database outbox.

:mod:`worker.notify.config` holds the destinations' settings, :mod:`worker.notify.message` what
a notification says, :mod:`worker.notify.queue` writes the outbox rows, :mod:`worker.notify.send`
claims and delivers them through one module per channel (``webhook``, ``email``, ``hl7``).
"""
