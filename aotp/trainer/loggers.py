"""Metric loggers: JSON lines always; W&B when ``logger=wandb``; nothing extra with ``logger=none``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Optional


class JsonlLogger:
    """Appends one JSON object per event to ``<run_dir>/metrics.jsonl`` (kept across resumes)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, kind: str, step: int, values: dict[str, Any]) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"kind": kind, "step": step, "time": time.time(), **values}) + "\n")

    def drop_after(self, step: int) -> None:
        """Keep the events up to ``step``: training restarts there (0, or a checkpoint's step) and logs the
        later ones again.

        A line torn by a kill mid-write is dropped too. Rewritten through a temporary file and a rename.
        """
        if not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if int(json.loads(line)["step"]) <= step:
                    kept.append(line + "\n")
            except (ValueError, KeyError, TypeError):
                continue
        temporary = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        temporary.write_text("".join(kept))
        os.replace(temporary, self.path)


WANDB_MODES = ("online", "offline", "disabled")
_WANDB_MODE_ALIASES = {"dryrun": "offline", "run": "online"}  # W&B's older spellings of WANDB_MODE
_said: set[str] = set()  # messages said once per process (a multirun runs many jobs in one process)


def say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        print(message, flush=True)


def find_wandb_key() -> Optional[str]:
    """Where a W&B API key is found, or None: ``WANDB_API_KEY``, then the netrc entry ``wandb login`` writes
    (``$NETRC`` or ~/.netrc, for the host of ``WANDB_BASE_URL``, default api.wandb.ai), then ``api_key`` in the
    W&B settings file (``$WANDB_CONFIG_DIR/settings``, default ~/.config/wandb/settings)."""
    import configparser
    import netrc
    from urllib.parse import urlparse

    if os.environ.get("WANDB_API_KEY"):
        return "WANDB_API_KEY"
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    candidates = [os.environ["NETRC"]] if os.environ.get("NETRC") else [os.path.expanduser("~/.netrc"),
                                                                        os.path.expanduser("~/_netrc")]
    for path in candidates:
        try:
            entry = netrc.netrc(path).authenticators(host)
        except (OSError, netrc.NetrcParseError):
            continue
        if entry and entry[2]:
            return f"{path} ({host})"
    settings = Path(os.environ.get("WANDB_CONFIG_DIR") or Path.home() / ".config" / "wandb") / "settings"
    parser = configparser.ConfigParser()
    try:
        parser.read(settings)
    except configparser.Error:
        return None
    if parser.has_option("default", "api_key") and parser.get("default", "api_key").strip():
        return str(settings)
    return None


def wandb_mode(configured: Optional[str] = None) -> tuple[str, str]:
    """(mode, why): ``logger.mode`` when set, else ``WANDB_MODE`` (``WANDB_DISABLED=true`` = disabled), else online
    when a key is found anywhere (:func:`find_wandb_key`), else offline."""
    from aotp.cli import ConfigError

    if configured:
        if configured not in WANDB_MODES:
            raise ConfigError(f"logger.mode={configured!r}; valid: {', '.join(WANDB_MODES)} or null (null = WANDB_MODE, "
                              f"else online with an API key, else offline)")
        return configured, f"logger.mode={configured}"
    environment_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if environment_mode:
        mode = _WANDB_MODE_ALIASES.get(environment_mode, environment_mode)
        if mode not in WANDB_MODES:
            raise ConfigError(f"WANDB_MODE={environment_mode!r}; valid: {', '.join(WANDB_MODES)}")
        return mode, f"WANDB_MODE={environment_mode}"
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("true", "1", "yes"):
        return "disabled", "WANDB_DISABLED=true"
    source = find_wandb_key()
    if source:
        return "online", f"API key from {source}"
    return "offline", "no W&B API key found (WANDB_API_KEY, ~/.netrc from `wandb login`, W&B settings)"


class WandbLogger:
    """Mirrors metrics, the parameter counts and the final record to W&B (mode: :func:`wandb_mode`)."""

    def __init__(self, cfg, run_id: str, run_dir: Path, config: dict, name: str, tags: list[str], mode: str):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=cfg.get("project", "aotp"), entity=cfg.get("entity"), group=cfg.get("group"),
                              name=name, id=run_id, resume="allow", tags=tags, config=config, dir=str(run_dir), mode=mode,
                              reinit="finish_previous")

    @classmethod
    def create(cls, cfg, run_id: str, run_dir: Path, config: dict, name: str, tags: list[str]) -> Optional["WandbLogger"]:
        """The logger, or None when W&B is disabled (then no W&B file is written); the mode and why, said once."""
        mode, why = wandb_mode(cfg.get("mode"))
        if mode == "disabled":
            say_once(f"W&B disabled ({why}): no W&B run, metrics in metrics.jsonl only")
            return None
        if mode == "offline" and not why.startswith(("logger.mode", "WANDB_MODE")):
            say_once(f"W&B offline: {why}; runs are kept under <run dir>/wandb (upload later with `wandb sync`)")
        return cls(cfg, run_id, run_dir, config, name=name, tags=tags, mode=mode)

    def log(self, kind: str, step: int, values: dict[str, Any]) -> None:
        self.run.log({f"{kind}/{k}": v for k, v in values.items() if isinstance(v, (int, float))}, step=step)

    def describe(self, values: dict[str, Any]) -> None:
        self.run.config.update(values, allow_val_change=True)

    def finish(self, record: dict[str, Any]) -> None:
        for key, value in (record.get("metrics") or {}).items():
            if isinstance(value, (int, float)):
                self.run.summary[f"final/{key}"] = value
        for section in ("params", "timings", "inference"):  # what PEFT readers look for first, beside the metrics
            for key, value in (record.get(section) or {}).items():
                if isinstance(value, (int, float, str, bool)):
                    self.run.summary[f"{section}/{key}"] = value
        for split, counts in ((record.get("truncation") or {}).get("splits") or {}).items():
            for key, value in counts.items():
                self.run.summary[f"truncation/{split}/{key}"] = value
        if record.get("wall_seconds") is not None:
            self.run.summary["timings/wall_seconds"] = record["wall_seconds"]
        self.run.summary["status"] = record.get("status")
        self.run.finish(exit_code=0 if record.get("status") == "success" else 1)


class Loggers:
    """Fan-out to the JSONL logger and the optional W&B logger."""

    def __init__(self, jsonl: JsonlLogger, wandb: Optional[WandbLogger] = None):
        self.jsonl = jsonl
        self.wandb = wandb

    def log(self, kind: str, step: int, values: dict[str, Any]) -> None:
        self.jsonl.log(kind, step, values)
        if self.wandb is not None:
            self.wandb.log(kind, step, values)

    def start_at(self, step: int) -> None:
        self.jsonl.drop_after(step)

    def describe(self, values: dict[str, Any]) -> None:
        """Facts of the run known before training (parameter counts) for the W&B config; the record holds them
        too, so metrics.jsonl keeps only the curves (and stays the same across a resume)."""
        if self.wandb is not None:
            self.wandb.describe(values)

    def finish(self, record: dict[str, Any]) -> None:
        if self.wandb is not None:
            self.wandb.finish(record)
