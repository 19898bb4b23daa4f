from medrec.review.app import main  # the page lives in the package: medrec/review/app.py

if __name__ == "__main__":  # Streamlit runs this as __main__; a spawn child's re-import must not
    main()
