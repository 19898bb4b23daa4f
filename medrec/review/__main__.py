"""`python -m medrec.review RUN_DIR [--host H] [--port P] [--token T] [--predictions FILE]`: serve the review app.

Runs the review page (inside the package, so a wheel install works) as a Streamlit app in this
process (stopping this PID stops the server), bound to 127.0.0.1 unless --host says otherwise,
headless, without usage statistics or error details, answering only to the names it binds.
A non-loopback --host needs an access token (--token or MEDREC_REVIEW_TOKEN); the printed URL
carries it and a browser without it is asked for it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from medrec import runfolder as rf
from medrec.exitcodes import handle_errors
from medrec.review import server


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m medrec.review", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="run folder written by medrec.finetune")
    p.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1, this machine only; ::1 for IPv6 loopback)")
    p.add_argument("--token", default=None,
                   help=f"access token, required for a non-loopback --host (default: ${server.TOKEN_ENV}; "
                   "the environment keeps it out of the process list)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="another Host name browsers use to reach this server (e.g. behind a proxy); repeatable")
    p.add_argument("--predictions", type=Path, default=None,
                   help="predictions CSV to review instead of RUN/oof_predictions.csv")
    return p


def _check(args: argparse.Namespace, token: str | None) -> str | None:
    """The reason not to start, or None."""
    from medrec import runfolder as rf

    if not (args.run_dir / rf.RUN_JSON).is_file():
        return f"{args.run_dir} is not a medrec run folder (no {rf.RUN_JSON})"
    if args.predictions and not args.predictions.is_file():
        return f"predictions file {args.predictions} not found"
    if not server.is_loopback(args.host) and not token:
        return (f"--host {args.host} makes patient images reachable from the network; refused without an "
                f"access token: add --token TOKEN or set {server.TOKEN_ENV} (or bind 127.0.0.1)")
    if token is not None and len(token) < 8:
        return "the access token is shorter than 8 characters; use a longer one (e.g. python -c " \
               "'import secrets; print(secrets.token_urlsafe())')"
    return None


@handle_errors
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.run_dir = args.run_dir.resolve()
    token = args.token or os.environ.get(server.TOKEN_ENV) or None
    problem = _check(args, token)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        port = args.port or server.free_port(args.host)
    except OSError as exc:
        print(f"error: cannot bind {args.host}: {exc}", file=sys.stderr)
        return 2
    os.environ["MEDREC_REVIEW_RUN"] = str(args.run_dir)
    if args.predictions:
        os.environ["MEDREC_REVIEW_PREDICTIONS"] = str(args.predictions.resolve())
    allowed = server.allowed_hosts(args.host, args.allowed_host)
    print(f"medrec review of {args.run_dir.name}: {server.url(args.host, port, token)}  (Ctrl+C to stop)", flush=True)
    print(f"answering to: {', '.join(allowed)}", flush=True)
    server.serve(args.host, port, token=token, allowed=allowed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
