"""Metrics shared by training and by the serving-side commands (validate, calibrate, performance).

``metrics`` (slice- and series-level binary metrics, percentile intervals, thresholds),
``series_metrics`` (the series table's metrics with intervals), ``drift`` (probability
distributions and the population stability index) and ``plots`` (ROC, calibration, confusion).
Imports nothing of ``model.training``.
"""
