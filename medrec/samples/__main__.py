"""Write the bundled synthetic data sets and their example configs into a folder.

`medrec samples DIR` (or `python -m medrec.samples DIR`), then train on one with
`medrec finetune --config DIR/chest_xray.yaml`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medrec.exitcodes import handle_errors
from medrec.samples import SETS, write_samples


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    sets = "\n".join(f"  {name:<11} {what}" for name, what in SETS.items())
    p = argparse.ArgumentParser(prog="medrec samples", description=__doc__.splitlines()[0],
                                epilog=f"sample sets:\n{sets}", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=Path, help="folder to write into (created; generated files are replaced)")
    p.add_argument("--set", dest="sets", action="append", choices=list(SETS), metavar="NAME",
                   help="only this set (repeatable; default: all)")
    p.add_argument("--patients", type=int, help="pseudo-patients per set (default: the full set, as committed)")
    return p.parse_args(argv)


@handle_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for row in write_samples(args.dir, args.sets, args.patients):
        print(f"{row['set']}: {row['files']} files of {row['patients']} patients ({row['positives']} positive) "
              f"in {args.dir / row['set']}; config {row['config']}")
    first = (args.sets or list(SETS))[0]
    print(f"next: medrec finetune --config {args.dir / first}.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
