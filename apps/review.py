from medrec.review.app import main  # the page lives in the package: medrec/review/app.py

main()
