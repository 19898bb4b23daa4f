"""Regenerate data_samples/ct_head: the generator is medrec.samples.ct_head (in the wheel too).

    python data_samples/make_ct_head.py                 # -> data_samples/ct_head (byte-identical to the committed files)
    python data_samples/make_ct_head.py --out /tmp/x --patients 3
"""

from pathlib import Path

from medrec.samples.ct_head import *  # noqa: F403  (the sample-data tests import this file and call its functions)
from medrec.samples.ct_head import main as _main

DEFAULT_OUT = Path(__file__).resolve().parent / "ct_head"


def main(argv: list[str] | None = None) -> None:
    _main(argv, default_out=DEFAULT_OUT)


if __name__ == "__main__":
    main()
