"""Regenerate data_samples/mri_brain: the generator is medrec.samples.mri_brain (in the wheel too).

    python data_samples/make_mri_brain.py                 # -> data_samples/mri_brain (byte-identical to the committed files)
    python data_samples/make_mri_brain.py --out /tmp/x --patients 3
"""

from pathlib import Path

from medrec.samples.mri_brain import *  # noqa: F403  (the sample-data tests import this file and call its functions)
from medrec.samples.mri_brain import main as _main

DEFAULT_OUT = Path(__file__).resolve().parent / "mri_brain"


def main(argv: list[str] | None = None) -> None:
    _main(argv, default_out=DEFAULT_OUT)


if __name__ == "__main__":
    main()
