"""`python -m synthjax.reader_study {export,score}`: the reader-study kit's command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from etils import epath

from synthjax.core.errors import SynthjaxError
from synthjax.reader_study.kit import (
    KEY_FILE,
    KIT_DIRNAME,
    PAGE_FILE,
    SCORES_JSON,
    SCORES_MD,
    ReaderStudyError,
    export,
    load_key,
)
from synthjax.reader_study.scores import score, scores_table


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m synthjax.reader_study",
        description="The reader-study kit: real vs synthetic images for radiologists, and "
        "the scoring of their answers.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{export,score}")
    e = sub.add_parser(
        "export",
        help="write a kit: index.html for readers, key.json for the study lead",
        description="Draw n images from each workdir (half from its kept real test split, "
        "half from its synthetic test split), shuffle them all in a seeded order and write "
        "index.html (the self-contained study page), key.json (the answer key) and "
        "README.txt into the kit directory.",
    )
    e.add_argument(
        "--workdir",
        action="append",
        required=True,
        metavar="DIR",
        help="a finished run (prepare and synthesize stages); repeat for several runs, "
        "e.g. one per resolution",
    )
    e.add_argument(
        "--n",
        type=int,
        default=100,
        help="images per workdir, half real and half synthetic (default 100)",
    )
    e.add_argument("--seed", type=int, default=0, help="seed of the draw and the order (default 0)")
    e.add_argument(
        "--out", metavar="KIT_DIR", help="kit directory (default: <first workdir>/reader_study)"
    )
    e.add_argument("--force", action="store_true", help="replace a kit already in KIT_DIR")
    s = sub.add_parser(
        "score",
        help="score readers' answers CSVs against the key",
        description="Join the readers' answers to the kit's key; print accuracy, "
        "sensitivity, specificity, binomial test and confidence, overall, per resolution, "
        "per reader and per reader x resolution; write scores.json and scores.md into the kit "
        "directory.",
    )
    s.add_argument("--workdir", metavar="DIR", help="the run whose DIR/reader_study is the kit")
    s.add_argument(
        "--answers",
        action="append",
        required=True,
        metavar="CSV",
        help="a CSV downloaded from the page; repeat for several readers",
    )
    s.add_argument("--kit", metavar="KIT_DIR", help="kit directory (default: DIR/reader_study)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log = lambda message: print(message, file=sys.stderr, flush=True)
    try:
        if args.command == "export":
            kit_dir = export(
                args.workdir, args.n, seed=args.seed, out=args.out, force=args.force, log=log
            )
            key = load_key(kit_dir)
            print(
                f"kit {key['kit_id']}: {len(key['items'])} images in {kit_dir}\n"
                f"  give readers only {kit_dir / PAGE_FILE}; {KEY_FILE} stays with the study lead"
            )
        else:
            if args.kit is None and args.workdir is None:
                raise ReaderStudyError("say where the kit is: --kit KIT_DIR or --workdir DIR")
            kit_dir = epath.Path(args.kit) if args.kit else epath.Path(args.workdir) / KIT_DIRNAME
            result = score(kit_dir, args.answers, log=log)
            print(scores_table(result))
            print(f"\nwritten: {kit_dir / SCORES_JSON}, {kit_dir / SCORES_MD}")
    except SynthjaxError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0
