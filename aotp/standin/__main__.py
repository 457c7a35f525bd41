"""python -m aotp.standin models --out DIR [--only roberta_large ...]
python -m aotp.standin datasets --out DIR [--data-root ../shared/data] [--max-rows 50]

Builds the offline stand-ins; then ``HF_HOME=DIR HF_HUB_OFFLINE=1 python -m aotp.run model=roberta_large ...``
loads them through the same ``from_pretrained(hub_id, revision=...)`` call a GPU box makes after its
download. One subcommand per kind of stand-in: each registers ``add_arguments`` and ``main`` in
``SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aotp.standin import datasets as standin_datasets


def add_models_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="the stand-in HF_HOME (models go to OUT/hub)")
    parser.add_argument("--only", nargs="+", metavar="MODEL", help="model config names (default: every source: hub model)")


def models_main(args: argparse.Namespace) -> int:
    from aotp.standin.models import build_model_hub

    snapshots = build_model_hub(args.out, args.only)
    for name, snapshot in snapshots.items():
        files = ", ".join(sorted(p.name for p in snapshot.iterdir()))
        print(f"{name}: {snapshot.relative_to(args.out)} ({files})")
    print(f"Use: HF_HOME={args.out} HF_HUB_OFFLINE=1 python -m aotp.run model=<name> ...")
    return 0


# name -> (help, add_arguments, main)
SUBCOMMANDS = {
    "models": ("stand-in checkpoints of every `source: hub` model config, in the HF cache layout",
               add_models_arguments, models_main),
    "datasets": ("stand-ins of nyu-mll/glue and aps/super_glue (hub Parquet + the prepared cache offline "
                 "load_dataset reads)", standin_datasets.add_arguments, standin_datasets.run),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aotp.standin", description=__doc__.split("\n\n")[1])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, _) in SUBCOMMANDS.items():
        add_arguments(commands.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    try:
        return SUBCOMMANDS[args.command][2](args)
    except ValueError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
