"""`python -m medrec.review RUN_DIR [--port P] [--host H] [--predictions FILE]`: serve the review app.

Runs Streamlit in this process (so stopping this PID stops the server), bound to 127.0.0.1
unless --host says otherwise, headless, without usage statistics.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "apps" / "review.py"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def streamlit_argv(app: Path, run_dir: Path, *, host: str, port: int, predictions: Path | None) -> list[str]:
    """The `streamlit run` command line: local-only, headless, no telemetry, no file watcher."""
    argv = [
        "streamlit",
        "run",
        str(app),
        f"--server.address={host}",
        f"--server.port={port}",
        "--server.headless=true",
        "--server.fileWatcherType=none",
        "--server.runOnSave=false",
        "--browser.gatherUsageStats=false",
        f"--browser.serverAddress={host}",
        f"--browser.serverPort={port}",
        "--client.toolbarMode=minimal",
        "--",
        "--run",
        str(run_dir),
    ]
    if predictions:
        argv += ["--predictions", str(predictions)]
    return argv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medrec.review", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="run folder written by medrec.finetune")
    parser.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    parser.add_argument(
        "--predictions", type=Path, default=None, help="predictions CSV to review instead of RUN/oof_predictions.csv"
    )
    args = parser.parse_args(argv)

    run_dir = args.run_dir.resolve()
    if not (run_dir / "run.json").is_file():
        print(f"error: {run_dir} is not a medrec run folder (no run.json)", file=sys.stderr)
        return 2
    if args.predictions and not args.predictions.is_file():
        print(f"error: predictions file {args.predictions} not found", file=sys.stderr)
        return 2
    if not APP.is_file():
        print(f"error: the app {APP} is missing; run from a medrec source checkout", file=sys.stderr)
        return 2
    try:
        port = args.port or free_port(args.host)
    except OSError as exc:
        print(f"error: cannot bind {args.host}: {exc}", file=sys.stderr)
        return 2
    predictions = args.predictions.resolve() if args.predictions else None
    os.environ["MEDREC_REVIEW_RUN"] = str(run_dir)
    if predictions:
        os.environ["MEDREC_REVIEW_PREDICTIONS"] = str(predictions)
    print(f"medrec review of {run_dir.name}: http://{args.host}:{port}  (Ctrl+C to stop)", flush=True)

    from streamlit.web import cli as stcli

    sys.argv = streamlit_argv(APP, run_dir, host=args.host, port=port, predictions=predictions)
    return stcli.main()


if __name__ == "__main__":
    sys.exit(main())
