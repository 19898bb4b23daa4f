"""The one error handler and exit-code rule of every medrec command line.

Every CLI's `main(argv)` is wrapped with `handle_errors`, so `medrec VERB ...` and
`python -m medrec.VERB ...` (the same function) end the same way:

    0    success
    2    a usage error (argparse) or a `MedrecError`: the message, naming the thing, the bad value
         and the fix, goes to stderr as one line, without a traceback
    3    the command ran but its own check failed (`predict --strict`: an input could not be read;
         `export`: the exported model does not match PyTorch); the command's --help says which
    130  interrupted (Ctrl+C); finished work is kept (run folders resume with --resume)

Any other exception is a bug in medrec and keeps its traceback (exit 1, Python's default).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from medrec.errors import MedrecError
from medrec.threads import prepare_openmp_env

EXIT_OK = 0
EXIT_ERROR = 2
EXIT_CHECK_FAILED = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a process stopped by Ctrl+C

Main = Callable[[list[str] | None], int]


def handle_errors(main: Main) -> Main:
    """Wrap a CLI `main(argv) -> int`: MedrecError -> one line on stderr and exit 2; Ctrl+C -> 130."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        prepare_openmp_env()  # before the command imports torch (medrec.threads)
        try:
            return main(argv)
        except MedrecError as exc:
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED

    return wrapper
