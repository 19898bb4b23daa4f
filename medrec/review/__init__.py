"""Clinician review of a run's predictions: the Streamlit page, its server, cases and verdicts.

`python -m medrec.review RUN_DIR` serves medrec/review/app.py on 127.0.0.1 (medrec.review.server).
Plain-Python parts: cases (predictions -> checked cases, filters), display (images, windows, CAM
overlay), paths (which files may be opened), runinfo (run folder), store (RUN/review.sqlite).
"""
