"""Clinician review of a run's predictions: verdict store, case loading, the Streamlit app launcher.

`python -m medrec.review RUN_DIR` serves apps/review.py on 127.0.0.1; see medrec.review.cases
(predictions, filters, safe paths, display images) and medrec.review.store (RUN/review.sqlite).
"""
