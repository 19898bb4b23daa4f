"""`python -m medrec.tune`: the same as `medrec tune`."""

import sys

from medrec.tune.cli import main

if __name__ == "__main__":
    sys.exit(main())
