"""`python -m medrec.tune`: the same as `medrec tune`."""

import sys

from medrec.threads import prepare_openmp_env

if __name__ == "__main__":
    prepare_openmp_env()  # before torch loads, as the `medrec` command does
    from medrec.tune.cli import main

    sys.exit(main())
