"""``aotp-run --help``: what aotp is, example commands, and the config groups a user chooses from.

Written by aotp instead of Hydra's generic help (which lists every config group, the internal
``specialize/*`` per-(method, model, task) folders included, and no examples). The group choices are read
from the shipped configs, so the text cannot go stale; Hydra's own help stays at ``--hydra-help``.
"""

from __future__ import annotations

import textwrap

from aotp.config_checks import group_choices

# The groups a user picks on the command line, in the order of a typical command. Left out: specialize
# (chosen automatically per method/model/task), sweep (grids the experiments include), hydra/job_logging.
USER_GROUPS = ("model", "method", "task", "experiment", "trainer", "data", "logger", "hydra/launcher")
BUILT_IN = {"hydra/launcher": ["basic"]}  # Hydra's own choices, beside the shipped configs

EXAMPLES = """\
aotp-run model=tiny_bert task=glue/rte trainer.max_steps=2 data.root=tests/fixtures/data   # a smoke run
aotp-run model=roberta_base method=aot_fc task=glue/rte data.root=../shared/data
aotp-run model=minilm method=lora task=glue/sst2 method.lr=5e-4 seed=1 data.root=../shared/data
aotp-run -m experiment=cpu_mini data.root=../shared/data     # a sweep (= make reproduce EXPERIMENT=cpu_mini)
aotp-run model=minilm method=lora task=superglue/boolq --cfg job   # print the composed config, run nothing"""


def run_help(prog: str = "aotp-run") -> str:
    from omegaconf import OmegaConf

    from aotp.paths import config_root

    defaults = {}
    for entry in OmegaConf.to_container(OmegaConf.load(config_root() / "config.yaml"))["defaults"]:
        if isinstance(entry, dict):
            (key, value), = entry.items()
            defaults[key.removeprefix("optional ").removeprefix("override ")] = value
    examples = EXAMPLES.replace("aotp-run", prog).splitlines()
    lines = [f"{prog}: train and evaluate one aotp run, or a sweep of them with -m.",
             "",
             "aotp reproduces GLUE/SuperGLUE results of Ahead-of-Time P-Tuning and parameter-efficient baselines",
             "(full fine-tuning, BitFit, LoRA, adapters, P-Tuning v2). Arguments are Hydra overrides key=value;",
             "each run writes paths.results/<run>/result.json (config, metrics, environment) and is skipped when",
             "that record already says success (force=true retrains it).",
             "", "examples:"] + [f"  {line}" for line in examples]
    lines += ["", "config groups (group=choice; [default]):"]
    for group in USER_GROUPS:
        choices = BUILT_IN.get(group, []) + group_choices(group)
        default = defaults.get(group, "basic" if group == "hydra/launcher" else None)
        shown = ", ".join(f"[{c}]" if c == default else c for c in choices)
        lines += textwrap.wrap(shown, 106, initial_indent=f"  {group + ':':<16}", subsequent_indent=" " * 18)
    lines += ["",
              "other keys: seed=42, force=false, experiment_name=NAME, paths.results=results/runs,",
              "  paths.cache=.cache/aotp, data.root=DIR (the GLUE/SuperGLUE files), trainer.*, method.*, task.*",
              f"  ({prog} <overrides> --cfg job prints every key with its value).",
              "", f"Hydra's own flags (--multirun, --cfg, --info, --shell-completion ...): {prog} --hydra-help",
              "The other commands take key=value too (each has --help): aotp-evaluate, aotp-predict,",
              "aotp-inference, aotp-estimate, aotp-tables, aotp-bench."]
    return "\n".join(lines)
