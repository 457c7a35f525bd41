"""Benchmark records -> a Markdown report (``README.md``) and plots (PNG) next to the JSON.

Everything in the report is read from the records file; nothing is typed in by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

HEADLINE = (32, 128)
# The targets (issue 7) are about the paper's method; the report reads records only, so it names it.
TARGET_METHOD = "aot_fc"
# Drawn dashed: the backbone, and the methods whose inference is the backbone's computation.
SAME_AS_BACKBONE = ("backbone", "full_ft", "bitfit")
TARGET_OVERHEAD = 1.03        # AoT (materialised) at most 3% slower than the backbone at the headline shape
TARGET_MIXED_THROUGHPUT = 0.95  # mixed-batch AoT throughput at T=16 >= 0.95 x single-task AoT throughput


def load(path: str | Path) -> dict[str, Any]:
    """A benchmark file of any schema: ``{"schema_version", "env": Environment, "records"}``. Schema 1 was a
    bare list of records, 2 had the benchmark's own environment block (``git_sha``, ``dirty_paths``); since
    3 the file's ``env`` is the run record's (:class:`aotp.results.schema.Environment`, ``env.git.sha``)."""
    from aotp.results.schema import migrate_environment

    data = json.loads(Path(path).read_text())
    if isinstance(data, list):  # schema 1: a bare list of records
        data = {"schema_version": 1, "env": data[0]["env"] if data else {}, "records": data}
    return {**data, "env": migrate_environment(data["env"], f"{path}: env")}


def _processor(env) -> Optional[str]:
    """The GPU's name on CUDA, else the CPU model the benchmark read from /proc/cpuinfo."""
    return (env.device_name if (env.device or "").startswith("cuda") else None) or env.extra.get("cpu")


def _mb(value: Optional[float]) -> str:
    return "" if value is None else f"{value / 2**20:,.1f}"


def _f(value: Optional[float], digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _checked(record: dict[str, Any]) -> str:
    check = record.get("outputs_checked") or {}
    if not check:
        return ""
    parts = [f"{check.get('calls_checked', 0)} calls"]
    if check.get("finite"):
        parts.append("finite")
    if "shape" in check:
        parts.append("x".join(map(str, check["shape"])))
    if record.get("method") != "backbone" and "max_abs_diff_vs_backbone" in check:
        parts.append(f"Δbb {check['max_abs_diff_vs_backbone']:.2g}")
    if "max_abs_diff_vs_per_task" in check:
        parts.append(f"=per-task (Δ {check['max_abs_diff_vs_per_task']:.1g})")
    return ", ".join(parts)


def headline_shape(records: list[dict[str, Any]]) -> tuple[int, int]:
    shapes = {(r["batch_size"], r["seq_len"]) for r in records if r["kind"] in ("single_task", "headline")}
    if HEADLINE in shapes or not shapes:
        return HEADLINE
    return max(shapes, key=lambda s: (s[0] * s[1], s))


def acceptance(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The two targets of issue 7, evaluated on the records (None where not measured)."""
    batch, length = headline_shape(records)
    out = []
    candidates = [r for r in records if r["kind"] in ("headline", "single_task") and r["method"] == TARGET_METHOD
                  and r["variant"] == "materialized" and (r["batch_size"], r["seq_len"]) == (batch, length)]
    aot = max(candidates, key=lambda r: (r["kind"] == "headline", r["rounds"]), default=None)
    if aot is not None:
        wall, cpu = aot.get("overhead_vs_backbone"), aot.get("overhead_vs_backbone_cpu", aot.get("overhead_vs_backbone_gpu"))
        out.append({"target": f"{TARGET_METHOD} materialized <= {TARGET_OVERHEAD:.2f} x backbone time at batch {batch} x {length} "
                              f"({aot['rounds']} rounds, {aot['kind']} section)",
                    "measured": f"{wall:.4f} (wall-clock paired ratio, p10-p90 {aot['overhead_vs_backbone_p10']:.3f}-"
                                f"{aot['overhead_vs_backbone_p90']:.3f})" + (f"; {cpu:.4f} (CPU/GPU-time ratio)" if cpu else ""),
                    "passed": wall <= TARGET_OVERHEAD})
    mixed = [r for r in records if r["kind"] == "multi_task" and r["method"] == TARGET_METHOD and r.get("serving") == "mixed"]
    if mixed:
        top = max(mixed, key=lambda r: r["tasks"])
        out.append({"target": f"{TARGET_METHOD} mixed-batch throughput at T={top['tasks']} >= {TARGET_MIXED_THROUGHPUT} x single-task",
                    "measured": f"{top['throughput_vs_single_task']:.4f} (wall clock; per round each time divided by its "
                                f"neighbouring backbone calls, then mixed / single"
                                + (f", time-ratio p10-p90 {top['vs_single_task_p10']:.3f}-{top['vs_single_task_p90']:.3f}"
                                   if "vs_single_task_p10" in top else "") + ")"
                                + (f"; {1 / top['vs_single_task_cpu']:.4f} (CPU time)" if top.get("vs_single_task_cpu") else ""),
                    "passed": top["throughput_vs_single_task"] >= TARGET_MIXED_THROUGHPUT})
    return out


def markdown(data: dict[str, Any], json_name: str, plots: list[str]) -> str:
    env, records = data["env"], data["records"]
    facts, packages = env.extra, env.packages or {}
    config = facts.get("config", {})
    batch, length = headline_shape(records)
    quiet = facts.get("quiet_check") or {}
    lines = [f"# Inference benchmark: {records[0]['model'] if records else '?'} on {env.device}", ""]
    lines += ["Generated by `aotp/bench/report.py` from "
              f"[`{json_name}`]({json_name}) (one JSON object per measurement, with its environment).", ""]
    if facts.get("command"):
        lines += ["Command:", "", "```bash", facts["command"], "```", ""]
    lines += [
        "| setting | value |", "|---|---|",
        f"| device | {env.device} ({_processor(env)}, {env.cpu_count} logical CPUs) |",
        f"| threads | {env.threads} intra-op, {facts.get('interop_threads')} inter-op |",
        f"| dtype | {facts.get('dtype')} (model and AoT table) |",
        f"| grid | batch {config.get('batch_sizes')} x sequence length {config.get('seq_lens')}; multi-task at batch "
        f"{config.get('multitask_batch_size')} x {config.get('multitask_seq_len')}, tasks {config.get('tasks')} |",
        f"| rounds | {config.get('rounds')} timed (+{config.get('warmup')} warm-up) per grid point, a backbone call after "
        f"every {config.get('baseline_every')} variants; bias lookup: {config.get('lookup_repeats')} calls after every round |",
        f"| load average (1/5/15 min) | start {facts.get('loadavg_start')}, end {facts.get('loadavg_end')}"
        + (f"; waited {quiet.get('waited_s')} s for 1-min < {quiet.get('threshold')} (quiet at start: {quiet.get('quiet_at_start')})"
           if quiet else "") + " |",
        f"| versions | torch {env.torch}, transformers {packages.get('transformers')}, adapters {packages.get('adapters')}, "
        f"python {env.python} |",
        f"| code | git {str(env.git.sha)[:10]}"
        + (f" + uncommitted changes in {', '.join(env.git.dirty_paths)}" if env.git.dirty_paths else "") + " |",
        f"| time | {facts.get('timestamp')} |", "",
        "Inputs: uniformly random token ids (CLS ... SEP), no padding (the worst case for on-the-fly AoT: most tokens "
        "unique). Every method's parameters were moved off their init (zero for LoRA B, AoT output layers) before "
        "`prepare_for_inference`, so each variant really computes something else than the backbone; outputs are "
        "checked (finite, right shape, differ from the backbone's; every timed call's output checked too).", "",
        "**How to read the ratios.** `vs backbone` = median over rounds of the variant's time divided by the mean of the "
        "backbone calls right before and after it in the same round (wall clock); `(cpu)` = the same with process CPU "
        "time, which excludes the time other processes held the core (the machine is shared). `full_ft` computes "
        "exactly what the backbone computes, so its ratio shows the noise floor of the method.", "",
    ]
    lines += _summary(records)
    checks = acceptance(records)
    if checks:
        lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {c['target']} | {c['measured']} | {'yes' if c['passed'] else '**no**'} |" for c in checks]
        lines += [""]
    headline = [r for r in records if r["kind"] == "headline"]
    if headline:
        lines += [f"## Headline: batch {batch} x {length}, {headline[0]['rounds']} rounds", "",
                  "The backbone, full fine-tuning (the same computation: the noise floor), AoT with the materialised "
                  "table, and the same AoT table through the hooks' previous path (`materialized_previous`), alone "
                  "in one interleaved comparison with more rounds than the grid below.", ""]
        lines += _single_table(headline)
    single = [r for r in records if r["kind"] == "single_task"]
    if single:
        lines += [f"## Single task, batch {batch} x {length}, every method", ""]
        lines += _single_table([r for r in single if (r["batch_size"], r["seq_len"]) == (batch, length)])
        lines += ["## Single task, every grid point", ""]
        lines += _single_table(single, with_shape=True, compact=True)
    lookups = [r for r in records if r["kind"] == "bias_lookup"]
    if lookups:
        lines += ["## AoT bias lookup alone (no encoder)", "",
                  "The work AoT adds to a forward, timed alone after every round and divided by that round's backbone "
                  "time (`share`). `materialized` is what the hooks do now (per layer: gather the batch's rows of "
                  "`table[:, l]` into a buffer reused for the whole forward, add the hidden states in place of that "
                  "buffer); `materialized_previous` is what they did before (one `table[input_ids]` gather to "
                  "(N, T, L, d) before the encoder, then per layer an out-of-place add of the strided slice), kept for "
                  "comparison; `*_mixed` is a multi-task batch (each row's rows from its task's table).", "",
                  "| section | method | variant | tasks | batch | seq | median ms | p90 ms | share of backbone | p90 share |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in lookups:
            lines.append(f"| {r.get('section', '')} | {r['method']} | {r['variant']} | {r['tasks']} | {r['batch_size']} | {r['seq_len']} | "
                         f"{r['latency_ms_median']:.2f} | {r['latency_ms_p90']:.2f} | {r['share_of_backbone']:.4f} | "
                         f"{r['share_of_backbone_p90']:.4f} |")
        lines += [""]
    multi = [r for r in records if r["kind"] == "multi_task"]
    if multi:
        lines += _multitask_section(multi)
    train = [r for r in records if r["kind"] == "train_step"]
    if train:
        lines += ["## Training step (forward + backward + AdamW)", "",
                  "| method | batch | seq | median ms | p90 ms | examples/s | vs full_ft |", "|---|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['method']} | {r['batch_size']} | {r['seq_len']} | {r['latency_ms_median']:.1f} | "
                  f"{r['latency_ms_p90']:.1f} | {r['throughput_examples_per_s']:.1f} | {_f(r.get('ratio_vs_full_ft'))} |"
                  for r in train]
        lines += [""]
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    lines += ["## Notes", "",
              "- Peak memory = weights (distinct parameter and buffer storages of the variant, the AoT table counted "
              "in full although it is memory-mapped) + the peak of tensor memory allocated during one forward "
              f"({'CUDA allocator peak' if (env.device or '').startswith('cuda') else 'replayed from the PyTorch profiler allocation events'}).",
              "- `full_ft` and `bitfit` are the same computation as the backbone at inference (only weight values "
              "differ); `lora/merged` too (B A is merged into W by `prepare_for_inference`); `lora/unmerged` runs "
              "`apply` only.",
              "- AoT `materialized`: the |V| x L x d table is computed once by `prepare_for_inference`, written with "
              "safetensors and memory-mapped; `on_the_fly` keeps the reparametrization and computes the rows of the "
              "batch's unique tokens in each forward.", ""]
    return "\n".join(lines)


def _range(values: list[float], digits: int = 3) -> str:
    return "" if not values else (f"{min(values):.{digits}f}" if len(values) == 1 else
                                  f"{min(values):.{digits}f}-{max(values):.{digits}f}")


def _summary(records: list[dict[str, Any]]) -> list[str]:
    """A few sentences computed from the records (ranges over the grid)."""
    single = [r for r in records if r["kind"] == "single_task"]
    if not single:
        return []

    def ratios(method, variant):
        return [r["overhead_vs_backbone"] for r in single if r["method"] == method and r["variant"] == variant]

    def shares(variant):
        return [r["share_of_backbone"] for r in records if r["kind"] == "bias_lookup" and r["method"] == TARGET_METHOD
                and r["variant"] == variant and r["tasks"] == 1]

    shapes = sorted({(r["batch_size"], r["seq_len"]) for r in single})
    lines = ["## Summary (computed from the records)", "",
             f"Over the grid ({', '.join(f'{b}x{l}' for b, l in shapes)}), time / backbone time (median paired ratio, wall clock):", ""]
    for method, variant in dict.fromkeys((r["method"], r["variant"]) for r in single):
        if method != "backbone":
            lines.append(f"- `{method}/{variant}`: {_range(ratios(method, variant))}")
    now, before = shares("materialized"), shares("materialized_previous")
    if now:
        lines += ["", f"AoT bias work alone (no encoder) as a share of the backbone's time: {_range(now)} with the "
                      f"hooks' current path" + (f", {_range(before)} with their previous path" if before else "") + "."]
    lines += ["", "`full_ft`, `bitfit` and `lora/merged` compute exactly what the backbone computes: their spread "
                  "around 1.000 is the measurement noise of this run.", ""]
    return lines


def _single_table(records: list[dict[str, Any]], with_shape: bool = False, compact: bool = False) -> list[str]:
    head = "| method | variant |" + (" batch | seq |" if with_shape else "") + \
        " median ms | p90 ms | examples/s | vs backbone | (cpu) | p10-p90 |" + \
        ("" if compact else " peak MB | weights MB | outputs checked |")
    sep = "|---|---|" + ("---:|---:|" if with_shape else "") + "---:|---:|---:|---:|---:|---|" + ("" if compact else "---:|---:|---|")
    lines = [head, sep]
    for r in records:
        cpu = r.get("overhead_vs_backbone_cpu", r.get("overhead_vs_backbone_gpu"))
        row = f"| {r['method']} | {r['variant']} |" + (f" {r['batch_size']} | {r['seq_len']} |" if with_shape else "")
        row += (f" {r['latency_ms_median']:.1f} | {r['latency_ms_p90']:.1f} | {r['throughput_examples_per_s']:.1f} | "
                f"{r['overhead_vs_backbone']:.3f} | {_f(cpu)} | {r['overhead_vs_backbone_p10']:.3f}-{r['overhead_vs_backbone_p90']:.3f} |")
        if not compact:
            row += f" {_mb(r.get('peak_memory_bytes'))} | {_mb(r.get('weights_bytes'))} | {_checked(r)} |"
        lines.append(row)
    if not compact:
        notes = {f"{r['method']}/{r['variant']}": r.get("note") for r in records if r.get("note")}
        lines += [""] + [f"- `{k}`: {v}" for k, v in notes.items()]
    return lines + [""]


def _multitask_section(records: list[dict[str, Any]]) -> list[str]:
    timed = [r for r in records if r.get("latency_ms_median") is not None]
    shape = f"batch {timed[0]['batch_size']} x {timed[0]['seq_len']}" if timed else ""
    lines = [f"## Multi-task serving, {shape}", "",
             "Each method holds T_max tasks on one backbone (own heads per task). A batch whose row r belongs to task "
             "r mod T is served in one forward (`mixed`) or as T per-task batches (`per_task`); `single` is a batch of "
             "one task. `vs single task` = throughput / the same method's single-task throughput (per round, each time divided "
             "by its neighbouring backbone calls first); "
             "`vs backbone` as above. Weights are counted for T tasks.", "",
             "| method | variant | how tasks are mixed | tasks | serving | median ms | p90 ms | examples/s | "
             "vs single task | vs backbone | (cpu) | weights MB | peak MB | outputs checked |",
             "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in records:
        if r.get("latency_ms_median") is None:
            lines.append(f"| {r['method']} | | {r.get('mixing', '')} | {r['tasks']} | {r.get('serving')} | | | | | | | | | |")
            continue
        cpu = r.get("overhead_vs_backbone_cpu", r.get("overhead_vs_backbone_gpu"))
        how = {"mixed": r.get("mixing", ""), "single": "",
               "per_task": r.get("mixing", "") if r.get("mixing", "").startswith("cannot") else "T per-task batches"}
        lines.append(f"| {r['method']} | {r['variant']} | {how.get(r.get('serving'), '')} | "
                     f"{r['tasks']} | {r.get('serving')} | {r['latency_ms_median']:.1f} | {r['latency_ms_p90']:.1f} | "
                     f"{r['throughput_examples_per_s']:.1f} | {_f(r.get('throughput_vs_single_task'))} | "
                     f"{r['overhead_vs_backbone']:.3f} | {_f(cpu)} | {_mb(r.get('weights_bytes'))} | "
                     f"{_mb(r.get('peak_memory_bytes'))} | {_checked(r)} |")
    return lines + [""]


# -- plots ---------------------------------------------------------------------------------------------
def plots(data: dict[str, Any], out_dir: Path, stem: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = data["records"]
    single = [r for r in records if r["kind"] == "single_task"]
    written = []
    if single:
        batches = sorted({r["batch_size"] for r in single})
        lengths = sorted({r["seq_len"] for r in single})
        keys = list(dict.fromkeys((r["method"], r["variant"]) for r in single))
        for metric, ylabel, name in (("throughput_examples_per_s", "examples / s", "throughput"),
                                     ("overhead_vs_backbone", "time / backbone time (median paired ratio)", "overhead")):
            fig, axes = plt.subplots(1, 2, figsize=(13, 5))
            for axis, (x_name, xs, fixed_name, fixed) in zip(axes, (("batch_size", batches, "seq_len", max(lengths)),
                                                                    ("seq_len", lengths, "batch_size", max(batches)))):
                colors = plt.get_cmap("tab20")
                for index, key in enumerate(keys):
                    points = sorted((r[x_name], r[metric]) for r in single
                                    if (r["method"], r["variant"]) == key and r[fixed_name] == fixed)
                    if points:
                        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=colors(index % 20),
                                  linestyle="--" if key[0] in SAME_AS_BACKBONE else "-",
                                  label=f"{key[0]}/{key[1]}")
                axis.set_xlabel(f"{x_name.replace('_', ' ')} ({fixed_name.replace('_', ' ')} = {fixed})")
                axis.set_xticks(xs)
                axis.set_ylabel(ylabel)
                if metric == "overhead_vs_backbone":
                    axis.axhline(1.0, color="grey", linewidth=0.8)
                axis.grid(alpha=0.3)
            axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
            env = data["env"]
            fig.suptitle(f"{single[0]['model']}, {env.device}, {env.threads} thread(s), {env.extra.get('dtype')}: {name}")
            fig.tight_layout()
            path = out_dir / f"{stem}_{name}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(str(path))
    multi = [r for r in records if r["kind"] == "multi_task" and r.get("latency_ms_median") is not None and r["method"] != "backbone"]
    if multi:
        fig, axis = plt.subplots(figsize=(9, 5))
        keys = list(dict.fromkeys((r["method"], r["variant"]) for r in multi))
        for index, key in enumerate(keys):
            rows = [r for r in multi if (r["method"], r["variant"]) == key]
            color = f"C{index % 10}"
            for serving, style in (("mixed", "-"), ("per_task", ":")):
                points = sorted((r["tasks"], 1 / r["overhead_vs_backbone"]) for r in rows
                                if r["serving"] in (serving, "single"))
                if len(points) > 1 and any(r["serving"] == serving for r in rows):
                    axis.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", color=color,
                              label=f"{key[0]}/{key[1]} {serving}")
        axis.set_xscale("log", base=2)
        tasks = sorted({r["tasks"] for r in multi})
        axis.set_xticks(tasks, [str(t) for t in tasks])
        axis.set_xlabel("tasks in the batch")
        axis.set_ylabel("throughput / backbone throughput (median paired ratio)")
        axis.axhline(1.0, color="grey", linewidth=0.8)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        axis.set_title(f"multi-task serving, batch {multi[0]['batch_size']} x {multi[0]['seq_len']} "
                       "(solid: one mixed batch; dotted: T per-task batches)")
        fig.tight_layout()
        path = out_dir / f"{stem}_multitask.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    return written


def write_report(json_path: str | Path, readme: Optional[str | Path] = None, with_plots: bool = True) -> Path:
    """Write the plots and the Markdown report for ``json_path`` (default ``README.md`` beside it)."""
    json_path = Path(json_path)
    data = load(json_path)
    written = plots(data, json_path.parent, json_path.stem) if with_plots else []
    target = Path(readme) if readme else json_path.parent / "README.md"
    target.write_text(markdown(data, json_path.name, written))
    return target
