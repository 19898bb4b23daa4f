from medrec.review.app import main

# Streamlit runs this file as __main__; a multiprocessing "spawn" child re-imports the main module
# under another name, and must not start the page.
if __name__ == "__main__":
    main()
