"""`medrec VERB ...`: one command for every medrec tool.

Each verb runs the same `main(argv)` as its `python -m medrec.VERB` form (which stays), so
options, output and exit codes are identical; `medrec VERB --help` shows them. Exit codes are
the one rule of `medrec.exitcodes` (0 ok, 2 error, 3 a command's own check failed, 130
interrupted).

The verb's module is imported only after the OpenMP environment is set (`medrec.threads`),
because OpenMP reads it once, when torch loads it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from medrec import __version__
from medrec.errors import MedrecError
from medrec.exitcodes import handle_errors
from medrec.threads import prepare_openmp_env

# verb -> (module whose main(argv) it runs, one line for `medrec --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "finetune": ("medrec.finetune", "patient-grouped cross-validated fine-tuning of a config"),
    "predict": ("medrec.predict", "predict images or folders with a run's fold ensemble"),
    # `python -m medrec.explain` runs medrec.explain_run's main (medrec.explain is the library)
    "explain": ("medrec.explain_run", "Grad-CAM maps of a run's out-of-fold images, each from its fold's model"),
    "report": ("medrec.report", "rebuild a run's report, or compare two runs"),
    "review": ("medrec.review.__main__", "serve the review app for a run folder (local browser)"),
    "index": ("medrec.index", "walk a DICOM tree into a manifest CSV (and an errors CSV)"),
    "preview": ("medrec.preview", "a contact sheet of what the model sees after preprocessing"),
    "export": ("medrec.export", "export a fold model to ONNX or TorchScript, checked against PyTorch"),
    "weights": ("medrec.weights", "list, pull, check, export and import pretrained weights"),
    "samples": ("medrec.samples.__main__", "write the bundled synthetic data sets and their configs"),
    "tune": ("medrec.tune", "hyperparameter search over a config (needs the `tune` extra)"),
}

EPILOG = """\
quickstart, without a checkout:
  medrec samples demo
  medrec finetune --config demo/chest_xray.yaml
  medrec review runs/chest_xray-<timestamp>

exit codes: 0 ok; 2 error (message on stderr); 3 the command's own check failed
(predict --strict, export parity); 130 interrupted.
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medrec", description=__doc__.splitlines()[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"medrec {__version__}")
    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, (_, help_text) in COMMANDS.items():
        sub.add_parser(verb, help=help_text, add_help=False)
    return p


def verb_main(verb: str):
    """The `main(argv)` that `python -m` runs for `verb`."""
    module_name = COMMANDS[verb][0]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = " (pip install 'medrec[tune]')" if verb == "tune" else ""
        raise MedrecError(f"medrec {verb} cannot load {module_name}: {exc}{hint}") from exc
    return module.main


@handle_errors
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Only the verb is parsed here; everything after it belongs to the verb's own parser.
    verb_at = next((i for i, a in enumerate(argv) if not a.startswith("-")), len(argv))
    parser().parse_args(argv[: verb_at + 1])
    verb = argv[verb_at]
    prepare_openmp_env()
    code = verb_main(verb)(argv[verb_at + 1:])
    return 0 if code is None else int(code)  # as sys.exit(None) under python -m


if __name__ == "__main__":
    sys.exit(main())
