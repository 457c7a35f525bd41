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


class WandbLogger:
    """Mirrors metrics and the final record to W&B: online when WANDB_API_KEY is set, else offline."""

    def __init__(self, cfg, run_id: str, run_dir: Path, config: dict, name: str, tags: list[str]):
        import wandb

        mode = cfg.get("mode") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        self.wandb = wandb
        self.run = wandb.init(project=cfg.get("project", "aotp"), entity=cfg.get("entity"), group=cfg.get("group"),
                              name=name, id=run_id, resume="allow", tags=tags, config=config, dir=str(run_dir), mode=mode,
                              reinit="finish_previous")

    def log(self, kind: str, step: int, values: dict[str, Any]) -> None:
        self.run.log({f"{kind}/{k}": v for k, v in values.items() if isinstance(v, (int, float))}, step=step)

    def finish(self, record: dict[str, Any]) -> None:
        for key, value in (record.get("metrics") or {}).items():
            if isinstance(value, (int, float)):
                self.run.summary[f"final/{key}"] = value
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

    def finish(self, record: dict[str, Any]) -> None:
        if self.wandb is not None:
            self.wandb.finish(record)
