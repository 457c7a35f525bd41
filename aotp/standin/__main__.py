"""python -m aotp.standin models output=DIR [only=[roberta_large,...]] [size=small|full]
python -m aotp.standin datasets output=DIR [data.root=[../shared/data,...]] [max_rows=50]

Builds the offline stand-ins; then ``HF_HOME=DIR HF_HUB_OFFLINE=1 python -m aotp.run model=roberta_large ...``
loads them through the same ``from_pretrained(hub_id, revision=...)`` call a GPU box makes after its
download. One subcommand per kind of stand-in: each registers its key=value ``options`` and ``main`` in
``SUBCOMMANDS`` (``main`` takes a namespace: ``out``, and ``only`` or ``roots``/``max_rows``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

from aotp.cli import KeyValueParser, Option, UsageError, guarded
from aotp.standin import datasets as standin_datasets


def models_options() -> list[Option]:
    return [Option("output", "the stand-in HF_HOME (models go to <output>/hub)", required=True, kind=Path,
                   metavar="DIR", flags=("--out",)),
            Option("only", "model config names (default: every source: hub model)", None, many=True,
                   metavar="MODEL"),
            Option("size", "small: hidden 32, 2-3 layers (MBs); full: the publisher's config.json dimensions, random "
                   "weights (roberta_large: 1.42 GB)", "small", choices=("small", "full"))]


def models_main(args) -> int:
    from aotp.standin.models import build_model_hub

    snapshots = build_model_hub(args.out, args.only, args.size)
    for name, snapshot in snapshots.items():
        files = ", ".join(sorted(p.name for p in snapshot.iterdir()))
        print(f"{name}: {snapshot.relative_to(args.out)} ({files})")
    print(f"Use: HF_HOME={args.out} HF_HUB_OFFLINE=1 python -m aotp.run model=<name> ...")
    return 0


# name -> (help, options, main)
SUBCOMMANDS = {
    "models": ("stand-in checkpoints of every `source: hub` model config, in the HF cache layout",
               models_options, models_main),
    "datasets": ("stand-ins of nyu-mll/glue and aps/super_glue (hub Parquet + the prepared cache offline "
                 "load_dataset reads)", standin_datasets.options, standin_datasets.run),
}


@guarded
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = f"usage: python -m aotp.standin {{{','.join(SUBCOMMANDS)}}} key=value ... (--help after a subcommand)"
    if not argv or argv[0] in ("-h", "--help"):
        print(usage + "\n\n" + __doc__.split("\n\n")[1].strip() + "\n\n" +
              "\n".join(f"  {name:<10}{text}" for name, (text, _, _) in SUBCOMMANDS.items()))
        return 0 if argv else 2
    if argv[0] not in SUBCOMMANDS:
        raise UsageError(f"unknown subcommand {argv[0]!r}; valid: {', '.join(SUBCOMMANDS)}. {usage}")
    help_text, options, run = SUBCOMMANDS[argv[0]]
    values, _ = KeyValueParser(f"python -m aotp.standin {argv[0]}", help_text, options()).parse(argv[1:])
    args = SimpleNamespace(out=values.pop("output"), roots=values.pop("data.root", None), **values)
    try:
        return run(args)
    except ValueError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
