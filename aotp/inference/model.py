"""Multi-task inference: one frozen backbone, several AoT task packs, mixed batches.

Every example of a batch names its task. The bias rows of an example come from its task's source
(its table, or its on-the-fly rows, prepared before the encoder; each layer then gathers its slice
of every task's rows), and its logits from its task's head; the backbone runs once for the whole
mixed batch. Because AoT P-Tuning changes nothing but the per-token input bias of each layer, the
result per example equals that of the single-task model.

Constructors:

* ``MultiTaskModel(backbone, [(task_name, table, head), ...])`` -- the low-level form: ``table`` a
  (|V|, L, d) tensor or an :class:`AoTBias` (on-the-fly), ``head`` a :class:`TaskHead`; or
  :class:`TaskPack` objects to state head types, label names and text fields.
* ``MultiTaskModel.from_runs([run_dir, ...])`` -- finished AoT runs that share one backbone: reads
  ``run_dir/result.json`` (``config.model``/``config.task``/``config.method``) and the task pack in
  ``run_dir/inference/`` (:mod:`aotp.methods.aot.pack`); refuses runs of other backbones or methods.
  A run keeps the reparametrization, not its |V| x L x d table: the table is materialised here, chunk
  by chunk, in ``table_dtype`` (fp32/fp16/bf16; default the run's ``method.options.table_dtype``),
  |V| * L * d * bytes per task in memory; a run trained with ``save_table=true`` has it memory-mapped.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from aotp.methods.aot import pack as packs
from aotp.methods.aot.injector import BiasHooks, MixedBiases
from aotp.methods.aot.method import aot_method_names, backbone_shapes, build_aot_method
from aotp.methods.aot.module import AoTBias
from aotp.models.builders import Backbone, build_backbone
from aotp.models.task_model import HEAD_TYPES, TaskHead

RESULT_FILE = "result.json"
PACK_DIR = "inference"


@dataclass
class TaskPack:
    """One task on the shared backbone: its bias source and head (and how to read/format its data)."""

    name: str
    bias: Union[torch.Tensor, AoTBias]
    head: TaskHead
    head_type: str = ""  # default: classification if the head has >1 outputs, else regression
    label_names: Optional[list[str]] = None
    text_fields: Optional[list[str]] = None
    spec: dict[str, Any] = field(default_factory=dict)
    task_spec: Any = None  # an aotp.tasks.TaskSpec: records are then formatted exactly as in training
    max_length: Optional[int] = None  # truncation used in training (data.max_length or the spec's)

    def __post_init__(self):
        if not self.head_type:
            self.head_type = "classification" if self.head.out_proj.out_features > 1 else "regression"
        if self.head_type not in HEAD_TYPES:
            raise ValueError(f"task {self.name!r}: unknown head type {self.head_type!r}; valid: {', '.join(HEAD_TYPES)}")


def _as_pack(entry) -> TaskPack:
    if isinstance(entry, TaskPack):
        return entry
    if isinstance(entry, (tuple, list)) and len(entry) == 3:
        return TaskPack(*entry)
    raise TypeError(f"expected TaskPack or (task_name, table, head), got {type(entry).__name__}")


class MultiTaskModel(nn.Module):
    """One frozen backbone + per-task (bias source, head); see the module docstring."""

    def __init__(self, backbone: Union[Backbone, nn.Module], tasks: Sequence, tokenizer=None):
        super().__init__()
        if isinstance(backbone, Backbone):
            tokenizer = tokenizer or backbone.tokenizer
            backbone = backbone.model
        self.backbone = backbone
        self.tokenizer = tokenizer
        if getattr(self.backbone, "pooler", None) is not None:
            self.backbone.pooler = None  # the task heads replace it, as in TaskModel
        self.backbone.requires_grad_(False)
        self.uses_token_type_ids = int(getattr(backbone.config, "type_vocab_size", 0) or 0) > 1
        self.vocab_size, _, self.num_layers, self.hidden_size = backbone_shapes(backbone)
        device = backbone.get_input_embeddings().weight.device
        self.task_names: list[str] = []
        self.task_info: dict[str, TaskPack] = {}
        self.sources = nn.ModuleList()
        self.heads = nn.ModuleList()
        for entry in tasks:
            pack = _as_pack(entry)
            if pack.name in self.task_info:
                raise ValueError(f"task {pack.name!r} is given twice; task names must be unique")
            source = pack.bias
            if isinstance(source, torch.Tensor):
                source = AoTBias(None, self.vocab_size, self.num_layers, self.hidden_size,
                                 table=source if device.type == "cpu" else source.to(device))
            elif not isinstance(source, AoTBias):
                raise TypeError(f"task {pack.name!r}: bias must be a (|V|, L, d) tensor or an AoTBias")
            expected = (self.vocab_size, self.num_layers, self.hidden_size)
            got = (source.vocab_size, source.num_layers, source.hidden_size)
            if got != expected:
                raise ValueError(f"task {pack.name!r}: its biases are (|V|, L, d) = {got} but the backbone needs {expected}")
            if pack.head.dense.in_features != self.hidden_size:
                raise ValueError(f"task {pack.name!r}: head width {pack.head.dense.in_features} != backbone d {self.hidden_size}")
            self.task_names.append(pack.name)
            self.task_info[pack.name] = pack
            self.sources.append(source)
            self.heads.append(pack.head)
        if not self.task_names:
            raise ValueError("MultiTaskModel needs at least one task")
        self.requires_grad_(False)
        self.eval()
        self._row_tasks: Optional[torch.Tensor] = None
        self.hooks = BiasHooks(self._bias_for_rows).attach(self.backbone)

    # -- constructors --------------------------------------------------------------------------
    @classmethod
    def from_runs(cls, run_dirs: Sequence[Union[str, Path]], names: Optional[Sequence[str]] = None,
                  device: Union[str, torch.device] = "cpu", table_dtype: Optional[str] = None) -> "MultiTaskModel":
        """Load one backbone and the task packs of finished AoT runs (``run_dir/result.json`` +
        ``run_dir/inference/``). ``names`` overrides the task names (default: ``config.task.name``);
        ``table_dtype`` (fp32/fp16/bf16) the dtype of the tables held in memory (default: each run's)."""
        if not run_dirs:
            raise ValueError("from_runs needs at least one run directory")
        runs = [_read_run(Path(d)) for d in run_dirs]
        first_dir, first = runs[0]
        for run_dir, config in runs[1:]:
            if config["model"] != first["model"]:
                raise ValueError(f"run {run_dir} uses backbone {_describe(config['model'])} but run {first_dir} uses "
                                 f"{_describe(first['model'])}: multi-task inference needs runs that share one backbone")
        if names is not None and len(names) != len(runs):
            raise ValueError(f"{len(names)} names given for {len(runs)} runs")
        backbone = build_backbone(first["model"])
        backbone.model.to(device).eval()
        tasks = []
        for index, (run_dir, config) in enumerate(runs):
            task = config["task"]
            name = names[index] if names is not None else task["name"]
            pack = load_task_pack(run_dir / PACK_DIR, backbone.model, name=name, task_spec=task, method=config["method"],
                                  table_dtype=table_dtype)
            pack.task_spec = _task_spec_or_none(task)
            max_length = (config.get("data") or {}).get("max_length") or task.get("max_length")
            pack.max_length = int(max_length) if max_length else (pack.task_spec.max_length if pack.task_spec else None)
            tasks.append(pack)
        return cls(backbone, tasks).to(device)

    # -- forward -------------------------------------------------------------------------------
    def _bias_for_rows(self, input_ids: torch.Tensor) -> MixedBiases:
        """Row r's biases come from task ``row_tasks[r]``'s source. Each task's source prepares its
        rows before the encoder (a table view, or the on-the-fly rows of its unique tokens); each
        layer then gathers every task's rows into one (N, T, d) buffer (see
        :class:`~aotp.methods.aot.injector.MixedBiases`): straight into the task's slice when the
        rows are grouped by task, as :meth:`encode` arranges."""
        row_tasks = self._row_tasks
        if row_tasks is None or row_tasks.shape[0] != input_ids.shape[0]:
            raise RuntimeError("call MultiTaskModel.encode / predict_logits, not the backbone directly: "
                               "every row needs its task")
        tasks, counts = torch.unique_consecutive(row_tasks, return_counts=True)
        tasks, counts = tasks.tolist(), counts.tolist()
        if len(tasks) == 1:  # a single-task batch: no row indexing at all
            parts = [(None, self.sources[tasks[0]].biases(input_ids))]
        elif len(set(tasks)) == len(tasks):  # grouped by task: contiguous slices
            parts, start = [], 0
            for task, count in zip(tasks, counts):
                rows = slice(start, start + count)
                parts.append((rows, self.sources[task].biases(input_ids[rows])))
                start += count
        else:
            parts = []
            for task in sorted(set(tasks)):
                rows = (row_tasks == task).nonzero().squeeze(1)
                parts.append((rows, self.sources[task].biases(input_ids[rows])))
        dtype = functools.reduce(torch.promote_types, [biases.dtype for _, biases in parts])
        return MixedBiases(parts, input_ids.shape, self.num_layers, self.hidden_size, dtype, input_ids.device)

    @torch.no_grad()
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, row_tasks: torch.Tensor,
               token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """First-token final states (R, d) of rows (R, T); row r uses task ``row_tasks[r]``'s biases.

        Rows are run grouped by task (a stable sort of the batch when its tasks are interleaved; the
        states are put back in the given order), so each task's bias rows are gathered straight into
        their slice of the layer buffer. Every row's result is the same either way."""
        row_tasks = row_tasks.to(input_ids.device)
        order = None
        if row_tasks.numel() > 1 and bool((row_tasks[1:] < row_tasks[:-1]).any()):
            order = torch.argsort(row_tasks, stable=True)
            input_ids, attention_mask, row_tasks = input_ids[order], attention_mask[order], row_tasks[order]
            token_type_ids = None if token_type_ids is None else token_type_ids[order]
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self.uses_token_type_ids:
            kwargs["token_type_ids"] = token_type_ids
        self._row_tasks = row_tasks
        try:
            states = self.backbone(**kwargs).last_hidden_state[:, 0]
        finally:
            self._row_tasks = None
        return states if order is None else torch.empty_like(states).index_copy_(0, order, states)

    def task_index(self, name: str) -> int:
        try:
            return self.task_names.index(name)
        except ValueError:
            from aotp.registry import unknown_choice_message
            raise KeyError(unknown_choice_message("task", name, self.task_names)) from None

    @torch.no_grad()
    def predict_logits(self, examples: Sequence[dict[str, Any]]) -> list[torch.Tensor]:
        """Logits of a mixed batch, one tensor per example, in order.

        Each example: ``{"task": name, "input_ids": (T,) or (C, T) for multiple choice,
        "attention_mask": same shape (default all ones), "token_type_ids": optional}``. All rows are
        padded to the longest and run through the backbone once. Output per example: (k,) logits
        for classification, a 0-d score for regression, (C,) scores for multiple choice.
        """
        device = self.backbone.get_input_embeddings().weight.device
        pad_id = getattr(self.backbone.config, "pad_token_id", None) or 0
        rows_ids, rows_mask, rows_types, row_tasks, spans = [], [], [], [], []
        for position, example in enumerate(examples):
            task = self.task_index(example["task"])
            head_type = self.task_info[self.task_names[task]].head_type
            ids = torch.as_tensor(example["input_ids"], dtype=torch.long)
            if ids.dim() != (2 if head_type == "multiple_choice" else 1):
                raise ValueError(f"example {position} (task {example['task']!r}, {head_type}): input_ids must be "
                                 f"{'(C, T)' if head_type == 'multiple_choice' else '(T,)'}, got {tuple(ids.shape)}")
            ids = ids.reshape(-1, ids.shape[-1])
            mask = torch.as_tensor(example.get("attention_mask", torch.ones_like(ids)), dtype=torch.long).reshape(ids.shape)
            types = example.get("token_type_ids")
            types = torch.zeros_like(ids) if types is None else torch.as_tensor(types, dtype=torch.long).reshape(ids.shape)
            spans.append((task, len(rows_ids), len(rows_ids) + ids.shape[0]))
            for row in range(ids.shape[0]):
                rows_ids.append(ids[row]), rows_mask.append(mask[row]), rows_types.append(types[row])
                row_tasks.append(task)
        if not spans:
            return []
        length = max(r.shape[0] for r in rows_ids)
        pad = lambda rows, value: torch.stack([nn.functional.pad(r, (0, length - r.shape[0]), value=value) for r in rows])  # noqa: E731
        states = self.encode(pad(rows_ids, pad_id).to(device), pad(rows_mask, 0).to(device),
                             torch.tensor(row_tasks, device=device), pad(rows_types, 0).to(device))
        # One head call per task over all of its rows.
        outputs = [None] * len(spans)
        for task in sorted({t for t, _, _ in spans}):
            members = [i for i, (t, _, _) in enumerate(spans) if t == task]
            row_index = torch.tensor([r for i in members for r in range(spans[i][1], spans[i][2])], device=device)
            scores = self.heads[task](states[row_index])
            offset = 0
            head_type = self.task_info[self.task_names[task]].head_type
            for i in members:
                count = spans[i][2] - spans[i][1]
                block = scores[offset:offset + count]
                offset += count
                outputs[i] = block[0] if head_type == "classification" else (
                    block[0, 0] if head_type == "regression" else block[:, 0])
        return outputs

    # -- text in, predictions out ----------------------------------------------------------------
    def tokenize(self, record: dict[str, Any], max_length: Optional[int] = None) -> dict[str, Any]:
        """Token ids of a raw record ``{"task": ..., <text fields>...}`` for :meth:`predict_logits`.

        Single/pair tasks read the task's ``text_fields`` (one or two). Multiple-choice records carry
        ``"choices"``: a list of strings or of [first, second] pairs, already formatted (task-specific
        formatting of the choices belongs to :mod:`aotp.tasks`). Sequences are truncated to
        ``max_length``, by default the task spec's ``max_length`` (else 512).
        """
        if self.tokenizer is None:
            raise RuntimeError("this MultiTaskModel has no tokenizer; pass token ids to predict_logits")
        name = record.get("task")
        if name is None:
            raise KeyError("record has no 'task' key")
        pack = self.task_info[self.task_names[self.task_index(name)]]
        max_length = int(max_length or pack.max_length or pack.spec.get("max_length") or 512)
        if pack.task_spec is not None:  # the task's own formatter and the training tokenisation
            from aotp.tasks.data import tokenize as tokenize_examples
            from aotp.tasks.formatting import FORMATTERS

            examples = FORMATTERS.get(pack.task_spec.formatter).format(pack.task_spec, [record], labelled=False)
            feature = tokenize_examples(examples, self.tokenizer, max_length, uses_token_type_ids=True)[0]
            return {"task": name, "input_ids": feature["input_ids"], "token_type_ids": feature["token_type_ids"]}
        kwargs = dict(truncation=True, max_length=max_length, return_token_type_ids=True)
        if pack.head_type == "multiple_choice":
            choices = record.get("choices")
            if not choices:
                raise KeyError(f"multiple-choice task {name!r}: the record needs a non-empty 'choices' list")
            firsts = [c if isinstance(c, str) else c[0] for c in choices]
            seconds = None if all(isinstance(c, str) for c in choices) else [c[1] for c in choices]
            encoded = self.tokenizer(firsts, seconds, padding=True, **kwargs)
        else:
            fields = pack.text_fields
            if not fields:
                raise ValueError(f"task {name!r} has no text_fields; pass token ids to predict_logits")
            missing = [f for f in fields if f not in record]
            if missing:
                raise ValueError(f"task {name!r} record lacks field(s) {missing}; its text fields are {fields}")
            if len(fields) > 2:
                raise ValueError(f"task {name!r} has {len(fields)} text fields; only one or two are supported here")
            encoded = self.tokenizer(*[record[f] for f in fields], **kwargs)
        return {"task": name, "input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
                "token_type_ids": encoded["token_type_ids"]}

    @torch.no_grad()
    def predict(self, records: Sequence[dict[str, Any]], max_length: Optional[int] = None) -> list[dict[str, Any]]:
        """Predictions for raw records of any mix of tasks: label (name), score or choice index."""
        logits = self.predict_logits([self.tokenize(r, max_length) for r in records])
        results = []
        for record, value in zip(records, logits):
            pack = self.task_info[record["task"]]
            out: dict[str, Any] = {"task": record["task"]}
            if "id" in record:
                out["id"] = record["id"]
            if pack.head_type == "regression":
                out["prediction"] = float(value)
            else:
                index = int(value.argmax())
                out["prediction"] = pack.label_names[index] if pack.head_type == "classification" and pack.label_names else index
                out["logits"] = [float(v) for v in value]
            results.append(out)
        return results


# -- reading runs and packs ------------------------------------------------------------------------
def _task_spec_or_none(task: dict):
    """The run's :class:`aotp.tasks.TaskSpec`, or None when the task dict is not a full spec."""
    if not all(key in task for key in ("benchmark", "splits", "metrics")):
        return None  # a partial spec (hand-written runs): records are read through text_fields
    from aotp.tasks.spec import TaskSpec

    return TaskSpec.from_config(task)


def _describe(model_cfg: dict) -> str:
    keys = [k for k in ("name", "source", "hub_id", "revision", "family") if k in model_cfg]
    return "{" + ", ".join(f"{k}={model_cfg[k]}" for k in keys) + "}"


def _read_run(run_dir: Path) -> tuple[Path, dict]:
    from aotp.assembly import finished_record

    path = run_dir / RESULT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass directories of finished runs (aotp.run writes result.json)")
    # a RunError (ValueError) names the file and key of a malformed record, or the status of an unfinished run
    config = finished_record(run_dir, use="served").config
    if not all(k in config for k in ("model", "task", "method")):
        raise ValueError(f"{path}: expected the resolved config under key 'config' with 'model', 'task' and 'method'")
    method = config["method"].get("name")
    if method not in aot_method_names():
        raise ValueError(f"run {run_dir} used method {method!r}; multi-task inference serves AoT P-Tuning runs only "
                         f"({', '.join(aot_method_names())}), whose adaptation is a per-token input bias")
    return run_dir, config


def load_task_pack(pack_dir: Union[str, Path], backbone: nn.Module, name: str, task_spec: Optional[dict] = None,
                   method: Optional[dict] = None, table_dtype: Optional[str] = None) -> TaskPack:
    """A :class:`TaskPack` from ``pack_dir`` (written by ``AoTMethod.prepare_for_inference``): its table
    memory-mapped when the run saved it, else materialised from the saved reparametrization in
    ``table_dtype`` (default the run's); an on-the-fly pack keeps the reparametrization."""
    pack_dir = Path(pack_dir)
    info = packs.read_pack_json(pack_dir)
    if method is not None and method.get("name") != info["method"]:
        raise ValueError(f"{pack_dir}: pack written by {info['method']!r} but the run's method is {method.get('name')!r}")
    head_info = info["head"]
    head = packs.load_head(pack_dir / info["files"]["head"], head_info["hidden_size"], head_info["num_outputs"])
    bias = build_aot_method(info["method"], info["options"]).load_bias(backbone, pack_dir, info, table_dtype)
    task_spec = dict(task_spec or {})
    head_type = task_spec.get("head", info["head_type"])
    if head_type != info["head_type"]:
        raise ValueError(f"{pack_dir}: pack head type {info['head_type']!r} != task spec head {head_type!r}")
    return TaskPack(name=name, bias=bias, head=head, head_type=info["head_type"],
                    label_names=task_spec.get("label_names"), text_fields=task_spec.get("text_fields"), spec=task_spec)
