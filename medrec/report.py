"""`python -m medrec.report RUN_DIR`: rebuild a run's metrics.json, report.html and report.md.

`python -m medrec.report --compare RUN_A RUN_B [--out FILE] [--format md|json]`: paired
comparison of two runs on the same cases (Markdown or JSON on stdout; FILE gets JSON when it
ends in .json, Markdown otherwise).

Only the run folder's oof_predictions.csv, run.json and config.yaml are read: no model, no GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from medrec.exitcodes import handle_errors


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m medrec.report", description=__doc__.split("\n")[0])
    p.add_argument("run_dir", nargs="?", help="run folder to (re)build the report of")
    p.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"), help="paired comparison of two runs")
    p.add_argument("--out", help="with --compare: also write the summary to this file (.json: JSON, else Markdown)")
    p.add_argument("--format", choices=("md", "json"), default="md", help="with --compare: stdout format")
    return p


def _build(run_dir: str) -> None:
    from medrec.eval.report import build_report

    doc = build_report(run_dir)
    run = Path(run_dir)
    print(f"{doc['provenance']['name']}: {doc['task']}, {doc['data']['n_images']} images, "
          f"{doc['bootstrap']['n_resamples']} {doc['bootstrap']['unit']}-level bootstrap resamples")
    for name, m in doc["metrics"].items():
        value = "—" if m["value"] is None else f"{m['value']:.3f}"
        ci = "" if m["ci_low"] is None else f"  ({m['ci_low']:.3f} – {m['ci_high']:.3f})"
        print(f"  {name:<24} {value}{ci}")
    for name in ("metrics.json", "report.html", "report.md"):
        print(f"wrote {run / name}")


def _compare(run_a: str, run_b: str, out: str | None, fmt: str) -> None:
    from medrec.eval.compare import compare_runs, to_markdown

    result = compare_runs(run_a, run_b)
    as_json = json.dumps(result, sort_keys=True, indent=2, allow_nan=False) + "\n"
    as_md = to_markdown(result)
    print(as_json if fmt == "json" else as_md, end="" if fmt == "json" else "\n")
    if out:
        Path(out).write_text(as_json if out.endswith(".json") else as_md)
        print(f"wrote {out}", file=sys.stderr)


@handle_errors
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if bool(args.run_dir) == bool(args.compare):
        _parser().error("give either RUN_DIR or --compare RUN_A RUN_B")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.compare:
        _compare(*args.compare, args.out, args.format)
    else:
        _build(args.run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
