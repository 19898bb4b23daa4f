"""`python -m medrec VERB ...`: the `medrec` command (medrec.cli)."""

import sys

from medrec.cli import main

if __name__ == "__main__":
    sys.exit(main())
