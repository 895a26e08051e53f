"""Download the authors' trained models (VQLoC, PRVQL) by name, convert and cache them for --weights NAME.

Subcommands:
  get NAME    download the checkpoint the authors published (vqloc: VQLoC, NeurIPS 2023; prvql: PRVQL, ICCV 2025),
              check it, convert it (as `prvql convert` does) and cache it; then `--weights NAME` works in locate,
              predict, demo and app. --file CHECKPOINT takes a file downloaded by other means instead.
  list        the names, their sources and where the cached models are.

The cache is ~/.cache/prvql (PRVQL_CACHE moves it); PRVQL_WEIGHTS_URL_VQLOC / PRVQL_WEIGHTS_URL_PRVQL replace the
published addresses (a mirror). An interrupted download resumes (a few times, then on the next run); a file that
is not a readable checkpoint of the named model is deleted and nothing is cached (one line, exit status 2).
"""

from __future__ import annotations

import argparse
from pathlib import Path

# library error field -> the option that gave it (prvql.cli prints the option)
FLAGS = {"source_file": "--file"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from prvql.named_weights import RELEASES

    sub = parser.add_subparsers(dest="weights_command", metavar="STEP", required=True)
    get = sub.add_parser("get", help="download, convert and cache one of the authors' models")
    get.add_argument("name", metavar="NAME", choices=sorted(RELEASES), help="vqloc or prvql")
    get.add_argument("--file", type=Path, help="the checkpoint (or published archive) already downloaded")
    get.add_argument("--force", action="store_true", help="download and convert again even when cached")
    get.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    sub.add_parser("list", help="the models by name, their sources and cached files")


def run(args: argparse.Namespace) -> int:
    from prvql.named_weights import RELEASES, cached_path, get_released, source_url

    if args.weights_command == "list":
        for name, release in RELEASES.items():
            path = cached_path(name)
            state = f"cached: {path}" if path.is_file() else f"not downloaded (prvql weights get {name})"
            print(f"{name}  {release.title}  {state}  source: {source_url(release)}")
        return 0
    fetched = get_released(args.name, source_file=args.file, force=args.force, progress=not args.no_progress)
    if fetched is None:
        print(f"{args.name}: already cached at {cached_path(args.name)} (--force to fetch it again)")
        return 0
    print(fetched.summary)
    print(f"source: {fetched.source} ({fetched.size} bytes, sha256 {fetched.sha256})")
    print(f"wrote {fetched.path}; use it with --weights {args.name}")
    return 0
