"""Serve a local web page to find an object in your own video: draw a box, watch the search, play the answer.

Upload a video, scrub to a frame and drag a box around the object (or give a crop image), choose "last seen
before this frame" (the default) or "anywhere in the video" and press Locate: the page shows the search's progress,
then the annotated video, the score curve and the track (click a row to seek), with track.json to download. The
search is ``prvql locate``'s, with the model loaded once; jobs run one at a time, the others wait in a queue.

Listens on 127.0.0.1 only unless --host says otherwise. Needs the app extra: pip install -e ".[app]".
Without --config and --weights the demo model shipped with the package is used.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket

from prvql.commands.options import MODEL_FLAGS, add_device_option, add_model_options, add_override_option, check_range
from prvql.errors import PRVQLError

DEFAULT_PORT = 7860

FLAGS = MODEL_FLAGS  # library error field -> the option that gave it (prvql.cli prints the option)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    add_model_options(parser)
    add_device_option(parser)
    add_override_option(parser, "inference.windows_per_batch=8")
    parser.add_argument("--max-upload-mb", type=float, default=1024.0, help="largest video accepted (default 1024)")
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads for the search (default: all cores but one, which keeps the page responsive)",
    )
    parser.add_argument(
        "--keep-minutes", type=float, default=60.0, help="unused uploads and results are deleted after (default 60)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from prvql.app.pipeline import LoadedModel
        from prvql.app.server import create_app
    except ImportError as exc:
        raise PRVQLError(f'prvql app needs the app extra ({exc.name} is missing): pip install -e ".[app]"') from None
    import torch

    from prvql.infer.trained_model import load_inference_model, resolve_device

    check_range("--port", args.port, 1, 65535)
    if args.max_upload_mb <= 0 or args.keep_minutes <= 0:
        raise PRVQLError("--max-upload-mb and --keep-minutes must be > 0")
    _check_port(args.host, args.port)
    if args.threads is not None and args.threads < 1:
        raise PRVQLError(f"--threads: must be >= 1 (got {args.threads})")
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) - 1))
    device = resolve_device(args.device)
    cfg, model = load_inference_model(args.config, args.weights, args.overrides)
    loaded = LoadedModel(cfg, model, device)
    loaded.warm_up()
    app = create_app(loaded, max_upload_bytes=int(args.max_upload_mb * 2**20), keep_seconds=args.keep_minutes * 60.0)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"prvql app: open http://{host}:{args.port}/ (model on {device}, {torch.get_num_threads()} CPU threads; "
        "Ctrl-C stops)",
        flush=True,
    )
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _check_port(host: str, port: int) -> None:
    """Fail early, before the model loads, when ``host:port`` cannot be listened on (e.g. the port is taken)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise PRVQLError(f"--host: cannot resolve {host!r} ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise PRVQLError(f"--port: cannot listen on {host}:{port} ({exc.strerror})") from None
