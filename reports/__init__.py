"""Comparison reports: pure functions from tidy frames to markdown, HTML and PNG figures.

Inputs (no MLflow here): ``cells`` and ``epochs`` with the columns of
``tracking.CELL_COLUMNS`` / ``tracking.EPOCH_COLUMNS``, ``examples`` (three test images and
predictions, see ``benchmarks.session.examples_payload``) and ``meta`` (session facts: run_id,
machine inventory, and the peaks record, ``tracking.peaks.Peaks.from_meta``). Of tracking, the
reports import only ``tracking.peaks``, the record and its names.

- ``reports.render.write_report``: everything into one folder (loads matplotlib);
- ``reports.tables``: the comparison table; ``reports.figures``: the figures;
- ``reports.stats``: quartiles, olympic mean, the shift test (numpy only).

This ``__init__`` imports nothing, so ``reports.stats`` never drags matplotlib in.
"""
