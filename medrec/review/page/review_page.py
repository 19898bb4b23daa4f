from medrec.review.app import main

main()
