"""The script Streamlit runs for `python -m medrec.review` (kept alone in this folder, because
Streamlit puts the script's folder first on sys.path)."""
