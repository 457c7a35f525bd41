"""Training throughput: aotp's loop against the Hugging Face ``transformers.Trainer`` (issue 17).

Both loops train the *same* module (aotp's ``TaskModel``: backbone + task head; for the HF Trainer it is
wrapped to return ``{"loss", "logits"}``) on the same tokenised examples, batch size, precision, device
and thread count, for one epoch. Whole runs are interleaved round by round (the order rotates), so a load
change on a shared machine hits both sides of a pair; the headline is the median over rounds of the paired
ratio of train examples per second, with its range.

Arms (``--arms``):

* ``aotp``: aotp at its defaults (length-grouped batches, fused AdamW, loss read at log steps only);
* ``aotp_ungrouped``: the same with ``trainer.group_by_length=false`` (the batches of every run before
  issue 17): separates the loop from the padding it computes;
* ``hf``: ``transformers.Trainer`` at its defaults (random batches padded by ``DataCollatorWithPadding``,
  its default optimizer, no length grouping, ``dataloader_num_workers=0``); only what would make it do
  something else than train is set: no reporting integrations, no checkpoint saving, no progress bar.

What is timed. aotp: ``train_seconds`` of the loop (every step from the collation of its first batch to
the optimizer step, evaluations and checkpoints excluded). HF: from the callback ``on_step_begin`` of the
first step to ``on_step_end`` of the last. On a GPU every timed interval ends with a device synchronise.
Both also in process CPU time (``cpu_*`` fields; aotp: the whole ``fit`` call with evaluation and
checkpoint writing stubbed out), which leaves out the time other processes held the cores: on a shared
machine the wall-clock figures carry the load, the CPU-time ones much less of it.

Host time. Collation is timed inside both loops (the collate function is wrapped; both collate in the
training process at their defaults on CPU); ``Tensor.item`` / ``.tolist`` / ``.__bool__`` calls are
counted during training by call site (reads of host-only tensors, such as the samplers' permutations, left
out): each is a host-device synchronisation when its tensor lives on a GPU. Compute = step time - collation.

Methods. Every method of ``--methods`` trains ``--method-steps`` steps with aotp's defaults in every
round, and its step time is divided by full fine-tuning's in the same round.

Padded-token share: the share of the collated token positions that are padding over the epoch's batches
(aotp with and without grouping, from the batch lists; HF from the batches its collator saw).
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from aotp.cli import guarded

import torch

METHODS = ("full_ft", "bitfit", "lora", "adapter_houlsby", "adapter_pfeiffer", "ptuning_v2", "aot_fc", "aot_kron")
ARMS = ("aotp", "hf", "aotp_ungrouped")


@dataclass
class TrainBenchConfig:
    model: str = "minilm"
    task: str = "glue/sst2"
    data_root: str = "../shared/data"
    train_examples: int = 512
    eval_examples: int = 32  # the final evaluation every aotp run makes (not timed)
    batch_size: int = 16
    max_length: int = 128
    rounds: int = 3
    arms: tuple = ARMS
    methods: tuple = METHODS
    method_steps: int = 12
    device: str = "cpu"
    precision: str = "fp32"
    threads: int = 1
    seed: int = 1
    overrides: tuple = ()  # extra Hydra overrides for every aotp config (e.g. model.family=bert for model=tiny_bert)
    out: Optional[str] = None


class TimedCollator:
    """Wraps a collate function: time spent collating, and real/padded token counts of every batch."""

    def __init__(self, collate: Callable, device: torch.device):
        self.collate, self.device = collate, device
        self.seconds, self.batches, self.real, self.padded = 0.0, 0, 0, 0

    def __call__(self, features):
        tick = time.perf_counter()
        batch = self.collate(features)
        self.seconds += time.perf_counter() - tick
        mask = batch["attention_mask"]
        self.batches += 1
        self.real += int(mask.sum())
        self.padded += mask.numel()
        return batch

    def reset(self) -> None:
        self.seconds, self.batches, self.real, self.padded = 0.0, 0, 0, 0

    def share(self) -> float:
        return 1.0 - self.real / self.padded if self.padded else 0.0


# Reads of tensors that live on the host whatever the device (the sampler's permutation, the DataLoader's
# base seed, aotp's epoch batches): never a device synchronisation, so not counted.
HOST_ONLY_READERS = ("torch/utils/data/", "epoch_batches", "length_grouped_batches")


@contextlib.contextmanager
def count_host_reads():
    """Counts ``Tensor.item``, ``.tolist`` and ``.__bool__`` calls (host reads of a tensor's value) by call
    site (``file:function``); each is a host-device synchronisation when its tensor is on a GPU."""
    sites: dict[str, int] = {}
    originals = {name: getattr(torch.Tensor, name) for name in ("item", "tolist", "__bool__")}

    def counting(name):
        original = originals[name]

        def read(self):
            code = sys._getframe(1).f_code
            site = f"{code.co_filename.rsplit('site-packages/', 1)[-1]}:{code.co_name}"
            if not any(marker in site for marker in HOST_ONLY_READERS):
                sites[f"{name} {site}"] = sites.get(f"{name} {site}", 0) + 1
            return original(self)
        return read

    for name in originals:
        setattr(torch.Tensor, name, counting(name))
    try:
        yield sites
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class NullLoggers:
    def log(self, kind, step, values):
        pass

    def start_at(self, step):
        pass

    def describe(self, values):
        pass


def compose_run(cfg: TrainBenchConfig, method: str, **trainer: Any):
    from aotp.run import compose

    overrides = [f"model={cfg.model}", f"method={method}", f"task={cfg.task}", f"data.root={cfg.data_root}",
                 f"data.max_train_samples={cfg.train_examples}", f"data.max_eval_samples={cfg.eval_examples}",
                 f"data.max_length={cfg.max_length}", f"trainer.batch_size={cfg.batch_size}",
                 f"trainer.precision={cfg.precision}", f"trainer.device={cfg.device}", "trainer.progress=false",
                 "trainer.epochs=1", f"trainer.threads={cfg.threads}", f"seed={cfg.seed}", "logger=none",
                 *cfg.overrides, *(f"trainer.{k}={v}" for k, v in trainer.items())]
    return compose(overrides)


def build_model(run_cfg):
    """aotp's model for a run config, assembled as ``aotp.run`` assembles it (:func:`aotp.assembly.build_run`:
    seed, backbone, head, method)."""
    from aotp.assembly import build_run

    parts = build_run(run_cfg, data=False)
    return parts.model, parts.method, parts.spec


def load_data(run_cfg, cache_dir: Path):
    from aotp.models import build_backbone
    from aotp.run import validate
    from aotp.tasks import load_task_data

    spec, _ = validate(run_cfg)
    backbone = build_backbone(run_cfg.model)
    data = load_task_data(spec, backbone.tokenizer, run_cfg.data, uses_token_type_ids=backbone.uses_token_type_ids,
                          seed=int(run_cfg.seed), cache_dir=cache_dir)
    return data, backbone.tokenizer


def run_aotp(cfg: TrainBenchConfig, data, method: str, work: Path, max_steps: Optional[int] = None,
             **trainer: Any) -> dict[str, Any]:
    """One aotp training run (evaluation stubbed out: only the training steps matter here)."""
    from aotp.trainer import loop
    from aotp.trainer.loop import Trainer, padded_token_share, setup_device

    run_cfg = compose_run(cfg, method, **({"max_steps": max_steps} if max_steps else {}), **trainer)
    device = setup_device(run_cfg.trainer)
    model, method_object, _ = build_model(run_cfg)
    run_dir = Path(tempfile.mkdtemp(dir=work))
    fit = Trainer(run_cfg.trainer, model, method_object, data, run_dir, NullLoggers(), device, int(run_cfg.seed))
    timed = TimedCollator(fit.collator, device)
    fit.collator = timed
    fit._evaluate_and_select = lambda state, best_state: best_state  # no dev pass: a training benchmark
    synchronize(device)
    saved = loop.save_checkpoint
    loop.save_checkpoint = lambda *args, **kwargs: None  # no checkpoint writes inside the CPU-time interval
    try:
        with count_host_reads() as reads:
            cpu = time.process_time()
            state = fit.fit(float(run_cfg.method.lr), float(run_cfg.method.get("weight_decay", 0.0))).state
            synchronize(device)
            cpu = time.process_time() - cpu
    finally:
        loop.save_checkpoint = saved
    steps = state["step"]
    batches = fit.epoch_batches(0)
    result = {"arm": "aotp", "method": method, "group_by_length": fit.group_by_length, "steps": steps,
              "examples": state["train_examples"], "train_seconds": state["train_seconds"],
              "examples_per_second": state["train_examples"] / state["train_seconds"],
              "step_ms": 1000 * state["train_seconds"] / steps, "cpu_seconds": cpu,
              "examples_per_cpu_second": state["train_examples"] / cpu, "cpu_step_ms": 1000 * cpu / steps,
              "collate_ms_per_step": 1000 * timed.seconds / steps, "padded_token_share": timed.share(),
              "padded_token_share_epoch": padded_token_share(batches, fit.lengths),
              "host_reads_per_step": sum(reads.values()) / steps, "host_reads": dict(reads),
              "num_workers": fit.num_workers, "trainable_parameters": sum(p.numel() for p in model.parameters()
                                                                           if p.requires_grad)}
    del fit, model
    gc.collect()
    return result


def run_hf(cfg: TrainBenchConfig, data, tokenizer, work: Path) -> dict[str, Any]:
    """``transformers.Trainer`` at its defaults on aotp's full fine-tuning model and the same examples."""
    try:
        from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments
        import accelerate  # noqa: F401 - the HF Trainer needs it; say so plainly
    except ImportError as error:
        raise RuntimeError(f"the HF Trainer arm needs `accelerate` (pip install 'accelerate>=0.26'): {error}") from error

    from aotp.trainer.loop import setup_device

    run_cfg = compose_run(cfg, "full_ft")
    device = setup_device(run_cfg.trainer)
    model, _, spec = build_model(run_cfg)

    class LossOutput(torch.nn.Module):
        def __init__(self, task_model):
            super().__init__()
            self.task_model = task_model

        def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
            logits = self.task_model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return {"loss": self.task_model.loss(logits, labels), "logits": logits}

    split = data[spec.train_split]
    keys = ("input_ids", "token_type_ids")
    examples = [{**{k: f[k] for k in keys if f.get(k) is not None}, "label": f["label"]} for f in split.features]
    collator = TimedCollator(DataCollatorWithPadding(tokenizer), device)
    times = {"first": None, "last": None, "cpu_first": None, "cpu_last": None, "steps": 0}

    class StepTimes(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if times["first"] is None:
                synchronize(device)
                times["first"], times["cpu_first"] = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            synchronize(device)
            times["last"], times["cpu_last"] = time.perf_counter(), time.process_time()
            times["steps"] += 1

    args = TrainingArguments(output_dir=str(Path(tempfile.mkdtemp(dir=work))), per_device_train_batch_size=cfg.batch_size,
                             num_train_epochs=1, seed=cfg.seed, use_cpu=device.type == "cpu",
                             bf16=cfg.precision == "bf16", fp16=cfg.precision == "fp16",
                             report_to="none", save_strategy="no", disable_tqdm=True)
    trainer = Trainer(model=LossOutput(model), args=args, train_dataset=examples, data_collator=collator,
                      callbacks=[StepTimes()])
    torch.set_num_threads(cfg.threads)
    with count_host_reads() as reads:
        trainer.train()
    steps = times["steps"]
    seconds, cpu = times["last"] - times["first"], times["cpu_last"] - times["cpu_first"]
    result = {"arm": "hf", "method": "full_ft", "group_by_length": bool(args.group_by_length), "steps": steps,
              "examples": len(examples), "train_seconds": seconds, "examples_per_second": len(examples) / seconds,
              "step_ms": 1000 * seconds / steps, "cpu_seconds": cpu, "examples_per_cpu_second": len(examples) / cpu,
              "cpu_step_ms": 1000 * cpu / steps, "collate_ms_per_step": 1000 * collator.seconds / steps,
              "padded_token_share": collator.share(), "host_reads_per_step": sum(reads.values()) / steps,
              "host_reads": dict(reads), "optimizer": str(args.optim), "num_workers": args.dataloader_num_workers,
              "threads_during_run": torch.get_num_threads()}
    del trainer, model
    gc.collect()
    return result


def summarise(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def run_benchmark(cfg: TrainBenchConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    from aotp.results.record import environment

    torch.set_num_threads(cfg.threads)
    work = Path(tempfile.mkdtemp(prefix="aotp-bench-train-"))
    data, tokenizer = load_data(compose_run(cfg, "full_ft"), work / "cache")
    load_before = os.getloadavg()
    rounds = []
    for round_index in range(cfg.rounds):
        arms = list(cfg.arms)
        shift = round_index % len(arms)
        arms = arms[shift:] + arms[:shift]  # rotate which arm runs first
        result: dict[str, Any] = {"round": round_index, "order": arms, "arms": {}, "methods": {}}
        for arm in arms:
            if arm == "hf":
                result["arms"][arm] = run_hf(cfg, data, tokenizer, work)
            else:
                result["arms"][arm] = run_aotp(cfg, data, "full_ft", work,
                                               **({"group_by_length": "false"} if arm == "aotp_ungrouped" else {}))
            r = result["arms"][arm]
            log(f"round {round_index} {arm}: {r['examples_per_second']:.1f} ex/s, step {r['step_ms']:.1f} ms, "
                f"collate {r['collate_ms_per_step']:.2f} ms, padded {r['padded_token_share']:.3f}")
        methods = list(cfg.methods)
        methods = methods[round_index % len(methods):] + methods[:round_index % len(methods)]
        for method in methods:
            r = run_aotp(cfg, data, method, work, max_steps=cfg.method_steps)
            result["methods"][method] = r
            log(f"round {round_index} method {method}: step {r['step_ms']:.1f} ms")
        if "full_ft" in result["methods"]:
            full, full_cpu = result["methods"]["full_ft"]["step_ms"], result["methods"]["full_ft"]["cpu_step_ms"]
            result["step_vs_full_ft"] = {m: r["step_ms"] / full for m, r in result["methods"].items()}
            result["cpu_step_vs_full_ft"] = {m: r["cpu_step_ms"] / full_cpu for m, r in result["methods"].items()}
        for arm in ("aotp", "aotp_ungrouped"):
            if arm in result["arms"] and "hf" in result["arms"]:
                ours, theirs = result["arms"][arm], result["arms"]["hf"]
                result[f"{arm}_over_hf"] = ours["examples_per_second"] / theirs["examples_per_second"]
                result[f"{arm}_over_hf_cpu"] = ours["examples_per_cpu_second"] / theirs["examples_per_cpu_second"]
        rounds.append(result)
    summary: dict[str, Any] = {}
    for key in ("aotp_over_hf", "aotp_over_hf_cpu", "aotp_ungrouped_over_hf", "aotp_ungrouped_over_hf_cpu"):
        if all(key in r for r in rounds):
            summary[key] = summarise([r[key] for r in rounds])
    for arm in cfg.arms:
        summary[arm] = {field_name: summarise([r["arms"][arm][field_name] for r in rounds])
                        for field_name in ("examples_per_second", "examples_per_cpu_second", "step_ms", "cpu_step_ms",
                                           "collate_ms_per_step", "padded_token_share", "host_reads_per_step")}
    if all("step_vs_full_ft" in r for r in rounds):
        for key in ("step_vs_full_ft", "cpu_step_vs_full_ft"):
            summary[key] = {m: summarise([r[key][m] for r in rounds]) for m in cfg.methods}
        summary["method_step_ms"] = {m: summarise([r["methods"][m]["step_ms"] for r in rounds]) for m in cfg.methods}
        summary["method_cpu_step_ms"] = {m: summarise([r["methods"][m]["cpu_step_ms"] for r in rounds]) for m in cfg.methods}
        summary["method_trainable_parameters"] = {m: rounds[0]["methods"][m]["trainable_parameters"] for m in cfg.methods}
    env = environment(device=torch.device(cfg.device),
                      load_average={"start": load_before, "end": os.getloadavg()}).to_dict()
    record = {"kind": "train_benchmark", "config": asdict(cfg), "summary": summary, "rounds": rounds, "env": env,
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if cfg.out:
        from aotp.results.record import write_json_atomic

        write_json_atomic(Path(cfg.out), record)
    return record


def format_summary(record: dict[str, Any]) -> str:
    """Markdown lines for the report (results/bench/README_train.md)."""
    s, cfg = record["summary"], record["config"]
    fmt = lambda d, p=3: f"{d['median']:.{p}f} ({d['min']:.{p}f}-{d['max']:.{p}f})"  # noqa: E731
    lines = [f"model={cfg['model']}, task={cfg['task']} ({cfg['train_examples']} train examples, max_length "
             f"{cfg['max_length']}), batch {cfg['batch_size']}, {cfg['precision']}, device {cfg['device']}, "
             f"{cfg['threads']} thread(s), {cfg['rounds']} interleaved rounds; median (min-max) over rounds.", ""]
    if "aotp_over_hf" in s:
        lines.append(f"- aotp defaults / HF Trainer defaults, train examples/s (paired per round): **{fmt(s['aotp_over_hf'])}** "
                     f"wall clock; **{fmt(s['aotp_over_hf_cpu'])}** per CPU second")
    if "aotp_ungrouped_over_hf" in s:
        lines.append(f"- aotp with `trainer.group_by_length=false` / HF Trainer: {fmt(s['aotp_ungrouped_over_hf'])} wall clock; "
                     f"{fmt(s['aotp_ungrouped_over_hf_cpu'])} per CPU second")
    lines += ["", "| arm | examples/s | examples/CPU s | step ms | CPU ms/step | collation ms/step | padded-token share "
                  "| host reads/step |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for arm in cfg["arms"]:
        a = s[arm]
        lines.append(f"| {arm} | {fmt(a['examples_per_second'], 1)} | {fmt(a['examples_per_cpu_second'], 1)} | "
                     f"{fmt(a['step_ms'], 1)} | {fmt(a['cpu_step_ms'], 1)} | {fmt(a['collate_ms_per_step'], 2)} | "
                     f"{fmt(a['padded_token_share'])} | {fmt(a['host_reads_per_step'], 2)} |")
    if "step_vs_full_ft" in s:
        lines += ["", f"Step time of every method ({cfg['method_steps']} steps each, aotp defaults) against full "
                      "fine-tuning in the same round:", "",
                  "| method | trainable parameters | step ms | step / full FT step | CPU ms/step | CPU step / full FT |",
                  "|---|---:|---:|---:|---:|---:|"]
        for method in cfg["methods"]:
            lines.append(f"| {method} | {s['method_trainable_parameters'][method]:,} | {fmt(s['method_step_ms'][method], 1)} | "
                         f"{fmt(s['step_vs_full_ft'][method])} | {fmt(s['method_cpu_step_ms'][method], 1)} | "
                         f"{fmt(s['cpu_step_vs_full_ft'][method])} |")
    env = record["env"]
    lines += ["", f"Environment: torch {env['torch']}, transformers {env['packages'].get('transformers')}, "
                  f"{env.get('device_name')}, {env['cpu_count']} CPUs, load average start {env['load_average']['start']}, "
                  f"end {env['load_average']['end']}; {record['time']}."]
    return "\n".join(lines)


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


@guarded
def main(argv: Optional[list[str]] = None) -> int:
    """``python -m aotp.bench.train key=value ...`` (``make bench-train``): run the benchmark, print the report."""
    from aotp.cli import KeyValueParser, Option

    parser = KeyValueParser("python -m aotp.bench.train", "Training benchmark: aotp's loop vs the Hugging Face "
                            "Trainer on the same model and data, and every method's step time vs full fine-tuning.", [
        Option("model", "", "minilm"), Option("task", "", "glue/sst2"),
        Option("data.root", "folder of the GLUE/SuperGLUE files", "../shared/data", metavar="DIR"),
        Option("train_examples", "", 512, int, minimum=1), Option("batch_size", "", 16, int, minimum=1),
        Option("max_length", "", 128, int, minimum=1), Option("rounds", "interleaved rounds", 3, int, minimum=1),
        Option("arms", "", tuple(ARMS), many=True, choices=tuple(ARMS)),
        Option("methods", "methods timed against full fine-tuning", tuple(METHODS), many=True),
        Option("method_steps", "optimizer steps per method run", 12, int, minimum=1),
        Option("device", "", "cpu"), Option("precision", "", "fp32", choices=("fp32", "bf16", "fp16")),
        Option("threads", "", 1, int, minimum=1), Option("seed", "", 1, int),
        Option("override", "extra Hydra overrides for every aotp run", (), many=True),
        Option("output", "the JSON record", "results/bench/train_minilm_cpu_fp32.json", flags=("--out",)),
        Option("readme", "write the report here (markdown)", None, nullable=True)],
        examples=("OMP_NUM_THREADS=1 python -m aotp.bench.train data.root=../shared/data   # the committed CPU run",
                  "python -m aotp.bench.train device=cuda precision=bf16 threads=4 train_examples=8000 batch_size=32 "
                  "output=results/bench/train_minilm_cuda_bf16.json"))
    args, _ = parser.parse(sys.argv[1:] if argv is None else argv)
    cfg = TrainBenchConfig(model=args["model"], task=args["task"], data_root=args["data.root"],
                           train_examples=args["train_examples"], batch_size=args["batch_size"],
                           max_length=args["max_length"], rounds=args["rounds"], arms=tuple(args["arms"]),
                           methods=tuple(args["methods"]), method_steps=args["method_steps"], device=args["device"],
                           precision=args["precision"], threads=args["threads"], seed=args["seed"],
                           overrides=tuple(args["override"]), out=args["output"])
    record = run_benchmark(cfg)
    text = format_summary(record)
    print(text)
    if args["readme"]:
        out = Path(args["output"]).name
        Path(args["readme"]).write_text(f"# Training benchmark\n\nGenerated by `python -m aotp.bench.train` from "
                                        f"[`{out}`]({out}).\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
