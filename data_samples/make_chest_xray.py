"""Regenerate data_samples/chest_xray: the generator is medrec.samples.chest_xray (in the wheel too).

    python data_samples/make_chest_xray.py                 # -> data_samples/chest_xray (byte-identical to the committed files)
    python data_samples/make_chest_xray.py --out /tmp/x --patients 3
"""

from pathlib import Path

from medrec.samples.chest_xray import *  # noqa: F403  (the sample-data tests import this file and call its functions)
from medrec.samples.chest_xray import main as _main

DEFAULT_OUT = Path(__file__).resolve().parent / "chest_xray"


def main(argv: list[str] | None = None) -> None:
    _main(argv, default_out=DEFAULT_OUT)


if __name__ == "__main__":
    main()
