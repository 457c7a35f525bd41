"""Checks of a run's config values that need no model, no data and no torch.

``aotp.run`` calls :func:`check_group_choices` on the command line before Hydra composes (so a
misspelt ``task=glue/rtee`` gets "did you mean" and the list instead of Hydra's search-path dump) and
:func:`check_values` from ``validate()`` before anything is loaded: counts are whole numbers in range
(``data.max_train_samples=0`` is refused rather than silently meaning "all"), numbers parse
(``method.lr=abc``), and the output folders can be created (they are, as the run would next). Every failure is a
:class:`aotp.cli.ConfigError` whose message names the option, the value and what is valid.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

from aotp.cli import ConfigError
from aotp.paths import config_root

CONFIG_DIR = config_root()

# option -> (smallest valid value, null allowed, what null or the smallest value means)
COUNTS: dict[str, tuple[int, bool, str]] = {
    "seed": (0, False, ""),
    "data.max_train_samples": (1, True, "null = the whole training split"),
    "data.max_eval_samples": (1, True, "null = the whole eval split(s)"),
    "data.max_length": (4, True, "null = the task's max_length"),
    "data.subset_seed": (0, False, ""),
    "trainer.epochs": (0, False, ""),
    "trainer.max_steps": (1, True, "null = trainer.epochs"),
    "trainer.batch_size": (1, False, ""),
    "trainer.eval_batch_size": (1, False, ""),
    "trainer.gradient_accumulation_steps": (1, False, ""),
    "trainer.warmup_steps": (0, True, "null = trainer.warmup_ratio"),
    "trainer.eval_every": (0, False, "0 = once per epoch"),
    "trainer.patience": (1, True, "null = no early stopping"),
    "trainer.checkpoint_every": (0, False, "0 = only after evaluations"),
    "trainer.log_every": (1, True, "null = every step up to 1,000 steps, else about 1,000 points"),
    "trainer.threads": (1, True, "null = torch's default"),
    "trainer.num_workers": (0, True, "null = 0 on CPU, 2 on CUDA"),
}
# option -> (lower bound, lower bound included, upper bound, null allowed, description)
NUMBERS: dict[str, tuple[float, bool, Optional[float], bool, str]] = {
    "method.lr": (0.0, False, None, False, "the learning rate"),
    "method.head_lr": (0.0, False, None, True, "the task head's learning rate; null = method.lr"),
    "method.weight_decay": (0.0, True, None, True, "decoupled weight decay"),
    "trainer.warmup_ratio": (0.0, True, 1.0, False, "share of the steps spent warming up"),
    "trainer.max_grad_norm": (0.0, False, None, True, "gradient clipping; null = off"),
    "trainer.inference_tolerance": (0.0, True, None, False, "max |logit change| allowed by prepare_for_inference"),
    "data.truncation_warning": (0.0, True, 1.0, False, "share of truncated examples above which a run warns"),
    "trainer.adam_eps": (0.0, False, None, False, "AdamW epsilon"),
}
PRECISIONS = ("fp32", "bf16", "fp16")  # the keys of aotp.trainer.loop.PRECISIONS (not imported: it imports torch)
PATHS = ("paths.results", "paths.cache")
DEVICES = ("auto", "cpu", "cuda", "mps")


def _lookup(cfg, dotted: str) -> tuple[bool, Any]:
    node = cfg
    for part in dotted.split("."):
        if node is None or not hasattr(node, "get") or part not in node:
            return False, None
        node = node.get(part)
    return True, node


def parse_count(option: str, value: Any, minimum: int = 1, nullable: bool = False, meaning: str = "") -> Optional[int]:
    """``value`` as an int >= ``minimum`` (or None when ``nullable``); otherwise a ConfigError naming ``option``."""
    if value is None and nullable:
        return None
    number: Optional[int] = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        number = int(value)
    if number is None or number < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        null = " or null" if nullable else ""
        hint = f" ({meaning})" if meaning else ""
        raise ConfigError(f"{option} must be {kind}{null}{hint}, got {value!r}")
    return number


def parse_number(option: str, value: Any, low: float = 0.0, low_included: bool = True, high: Optional[float] = None,
                 nullable: bool = False, description: str = "") -> Optional[float]:
    """``value`` as a finite float in range (or None when ``nullable``); otherwise a ConfigError."""
    if value is None and nullable:
        return None
    label = f"{option} ({description})" if description else option
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{label} must be a number{' or null' if nullable else ''}, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{label} must be finite, got {value!r}")
    if number < low or (number == low and not low_included):
        bound = "positive" if low == 0 and not low_included else f">= {low:g}" if low_included else f"> {low:g}"
        raise ConfigError(f"{label} must be {bound}, got {value!r}")
    if high is not None and number > high:
        raise ConfigError(f"{label} must be <= {high:g}, got {value!r}")
    return number


def check_creatable(option: str, path: Any) -> None:
    """``path`` is a folder this process can write to, created if absent (the run would create it next)."""
    if path is None or str(path).strip() == "":
        raise ConfigError(f"{option} is empty; give a folder")
    target = Path(str(path)).expanduser()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{option}={path} is a file, not a folder")
    try:
        target.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=target)  # permissions alone miss read-only mounts
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise ConfigError(f"{option}={path} cannot be created or written: {error.strerror or error}"
                          f"{' (' + error.filename + ')' if error.filename else ''}") from None


def check_device(option: str, device: Any) -> str:
    name = str(device)
    kind, _, index = name.partition(":")
    if kind not in DEVICES or (index and not (kind == "cuda" and index.isdigit())):
        raise ConfigError(f"{option}={device!r}; valid: {', '.join(DEVICES)} (cuda:N allowed)")
    return name


def check_micro_batch_size(option: str, value: Any) -> Optional[int | str]:
    """``trainer.micro_batch_size``: null (one logical batch per forward), ``auto`` (the largest that fits,
    searched on CUDA) or an integer >= 1 (examples per forward/backward); anything else is a ConfigError
    naming the option and the valid values."""
    if value is None or (isinstance(value, str) and value.strip() == "auto"):
        return None if value is None else "auto"
    number: Optional[int] = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    if number is None or number < 1:
        raise ConfigError(f"{option}={value!r}; valid: an integer >= 1 (examples per forward/backward), null (one "
                          f"logical batch of trainer.batch_size per forward) or auto (the largest that fits on CUDA)")
    return number


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool)


def check_values(cfg, paths: bool = True) -> None:
    """Every numeric and enumerated option of a composed run config (counts, numbers, AdamW betas, epochs
    or steps, precision, W&B mode, device) and (``paths``) its output folders: the one place they are checked."""
    for option, (minimum, nullable, meaning) in COUNTS.items():
        present, value = _lookup(cfg, option)
        if present:
            parse_count(option, value, minimum, nullable, meaning)
    for option, (low, low_included, high, nullable, description) in NUMBERS.items():
        present, value = _lookup(cfg, option)
        if present:
            parse_number(option, value, low, low_included, high, nullable, description)
    present, betas = _lookup(cfg, "trainer.adam_betas")
    if present and (betas is None or len(betas) != 2 or not all(_is_number(b) and 0.0 <= float(b) < 1.0 for b in betas)):
        raise ConfigError(f"trainer.adam_betas must be two numbers in [0, 1), got {betas}")
    epochs, max_steps = _lookup(cfg, "trainer.epochs")[1], _lookup(cfg, "trainer.max_steps")[1]
    if _lookup(cfg, "trainer.epochs")[0] and not max_steps and int(epochs) <= 0:
        raise ConfigError(f"set trainer.epochs > 0 or trainer.max_steps > 0 (got epochs={epochs}, max_steps={max_steps})")
    present, precision = _lookup(cfg, "trainer.precision")
    if present and precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    present, mode = _lookup(cfg, "logger.mode")
    if present and mode is not None and mode not in ("online", "offline", "disabled"):
        raise ConfigError(f"logger.mode={mode!r}; valid: online, offline, disabled or null (null = WANDB_MODE, else "
                          f"online with an API key, else offline)")
    present, device = _lookup(cfg, "trainer.device")
    if present:
        check_device("trainer.device", device)
    present, micro = _lookup(cfg, "trainer.micro_batch_size")
    if present:
        check_micro_batch_size("trainer.micro_batch_size", micro)
    for option in PATHS if paths else ():
        present, value = _lookup(cfg, option)
        if present:
            check_creatable(option, value)


def group_choices(group: str, config_dir: Path = CONFIG_DIR) -> list[str]:
    """The config names of one Hydra group: ``task`` -> ``glue/rte``, ``superglue/copa``, ..."""
    folder = config_dir / group
    return sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml"))


_SWEEP_SYNTAX = ("(", "$", "[", "{", "*")  # range(), choice(), glob(), interpolations: left to Hydra


def check_group_choices(arguments: Sequence[str], config_dir: Path = CONFIG_DIR) -> None:
    """Refuse ``group=name`` arguments whose ``configs/<group>/<name>.yaml`` does not exist, with the
    closest names and the list (comma-separated sweep values are checked one by one)."""
    from aotp.registry import unknown_choice_message

    for argument in arguments:
        key, sep, value = argument.partition("=")
        key = key.lstrip("+~")
        if not sep or not key or key.startswith("hydra") or "." in key or key.startswith("-"):
            continue
        if not (config_dir / key).is_dir() or any(mark in value for mark in _SWEEP_SYNTAX):
            continue
        choices = group_choices(key, config_dir)
        for name in (v.strip() for v in value.split(",")):
            if name in ("", "null") or name in choices:
                continue
            raise ConfigError(unknown_choice_message(key.replace("/", " "), name, choices, key))
