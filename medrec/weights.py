"""`python -m medrec.weights`: manage torchvision's ImageNet weights cache for air-gapped use.

    python -m medrec.weights list                      arch, file, cached?
    python -m medrec.weights pull resnet50 googlenet   download (needs network; "all" for every arch)
    python -m medrec.weights check                     verify the sha256 prefix of each cached file
    python -m medrec.weights export weights.tar [ARCH...]   cached files + sha256 manifest
    python -m medrec.weights import weights.tar        verify and install into $TORCH_HOME/hub/checkpoints

Typical air-gapped flow: `pull` + `export` on a connected machine, copy the tar, `import`.
"""

from __future__ import annotations

import argparse
import sys
from http.client import HTTPException

from medrec.exitcodes import EXIT_CHECK_FAILED, handle_errors
from medrec.models import weights as w
from medrec.models.specs import SPECS, get_spec


def _list(_: argparse.Namespace) -> int:
    print(f"cache: {w.cache_dir()}")
    print(f"{'arch':<14}{'file':<36}cached")
    for spec in SPECS.values():
        path = w.cache_dir() / spec.weights_file
        cached = f"yes ({path.stat().st_size / 1e6:.0f} MB)" if path.exists() else "no"
        print(f"{spec.name:<14}{spec.weights_file:<36}{cached}")
    return 0


def _pull(args: argparse.Namespace) -> int:
    archs = list(SPECS) if args.arch == ["all"] else args.arch
    failed = 0
    for spec in [get_spec(a) for a in archs]:  # validate every name before the first download
        path = w.cache_path(spec)
        if path.exists():
            w.verify_file(path)
            print(f"{spec.name}: {path} already cached and verified")
            continue
        try:
            w.download(spec, path)
            print(f"{spec.name}: downloaded {spec.weights_url} -> {path} (sha256 verified)")
        except (OSError, HTTPException) as exc:
            failed += 1
            print(f"{spec.name}: download of {spec.weights_url} failed: {exc}", file=sys.stderr)
    return EXIT_CHECK_FAILED if failed else 0


def _check(_: argparse.Namespace) -> int:
    rows = w.check_cache()
    for arch, name, status in rows:
        print(f"{arch:<14}{name:<36}{status}")
    bad = [r for r in rows if r[2].startswith("CORRUPT")]
    if bad:
        print(f"{len(bad)} corrupt file(s) in {w.cache_dir()}: delete, then pull or import again", file=sys.stderr)
    return EXIT_CHECK_FAILED if bad else 0


def _export(args: argparse.Namespace) -> int:
    names = w.export_cache(args.file, args.arch or None)
    print(f"wrote {args.file} with {len(names)} file(s): {', '.join(names)}")
    return 0


def _import(args: argparse.Namespace) -> int:
    names = w.import_cache(args.file)
    print(f"installed {len(names)} verified file(s) into {w.cache_dir()}: {', '.join(names)}")
    return 0


@handle_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medrec.weights", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="architectures, weights files and whether they are cached").set_defaults(run=_list)
    p = sub.add_parser("pull", help="download weights into the cache (network)")
    p.add_argument("arch", nargs="+", help=f"'all' or some of: {', '.join(SPECS)}")
    p.set_defaults(run=_pull)
    sub.add_parser("check", help="verify the sha256 prefix of each cached file").set_defaults(run=_check)
    p = sub.add_parser("export", help="tar the cached files with a sha256 manifest")
    p.add_argument("file")
    p.add_argument("arch", nargs="*", help="only these architectures (default: all cached)")
    p.set_defaults(run=_export)
    p = sub.add_parser("import", help="verify and install the files of an export tar")
    p.add_argument("file")
    p.set_defaults(run=_import)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
