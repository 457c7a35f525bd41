"""Examples -> token features (cached on disk) -> padded batches.

Tokenisation is cached under ``paths.cache``, keyed by the whole task spec (formatter options
included), the source file's identity, the tokenizer's full definition, the maximum length and the
subset, so the second run of a task on the same tokenizer skips it. The cache stores the formatted
examples whole, so formatter-specific fields (``group``, ReCoRD's ``entity``/``answers``) survive it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from aotp.tasks.formatting import FORMATTERS
from aotp.tasks.loading import check_local_files, hub_source_fingerprint, load_raw_records, local_path
from aotp.tasks.spec import TaskSpec
from aotp.tasks.truncation import UNTRUNCATED, sequences, truncation_stats

log = logging.getLogger(__name__)


@dataclass
class SplitData:
    name: str
    examples: list[dict[str, Any]]
    features: list[dict[str, Any]]
    labelled: bool
    truncation: Optional[dict[str, Any]] = None  # aotp.tasks.truncation.truncation_stats

    def __len__(self) -> int:
        return len(self.features)


@dataclass
class TaskData:
    spec: TaskSpec
    splits: dict[str, SplitData] = field(default_factory=dict)

    def __getitem__(self, split: str) -> SplitData:
        return self.splits[split]


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of the tokenizer's definition. The fast backend's truncation/padding state is left out: a
    tokenizer call sets it, and it must not change the key between two loads in one process."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = json.loads(backend.to_str())
        definition.pop("truncation", None)
        definition.pop("padding", None)
        text = json.dumps(definition, sort_keys=True)
    else:
        text = json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def source_fingerprint(spec: TaskSpec, split: str, root: Optional[Path]) -> str:
    if root is None:
        return hub_source_fingerprint(spec, split)
    path = local_path(spec, split, root).resolve()
    if not path.is_file():
        check_local_files(spec, root, [split])
    stat = path.stat()
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"


def subset(items: list, limit: Optional[int], seed: int) -> list:
    """A fixed, seeded subset (order preserved) of at most ``limit`` items.

    Grouped examples (MultiRC answer options of one question, ReCoRD candidates of one query) are
    kept or dropped whole, so per-question metrics stay defined: whole groups are drawn until the
    next one would pass ``limit`` (at least one group is kept).
    """
    if not limit or limit >= len(items):
        return items
    if items and isinstance(items[0], dict) and "group" in items[0] and len({_key(e["group"]) for e in items}) < len(items):
        members: dict = {}
        for position, item in enumerate(items):
            members.setdefault(_key(item["group"]), []).append(position)
        groups = list(members)
        random.Random(seed).shuffle(groups)
        chosen, total = [], 0
        for group in groups:
            size = len(members[group])
            if chosen and total + size > limit:
                continue
            chosen.extend(members[group])
            total += size
        return [items[i] for i in sorted(chosen)]
    chosen = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in chosen]


def _key(group: Any) -> Any:
    return tuple(group) if isinstance(group, list) else group


def tokenize(examples: list[dict[str, Any]], tokenizer, max_length: int, uses_token_type_ids: bool,
             pair_encoding: str = "cross") -> list[dict[str, Any]]:
    """Token ids per example; multiple-choice examples get one sequence per choice.

    A siamese ``pair_encoding`` (``siamese``, ``siamese_cosine``) tokenises the two sentences of a pair as
    two separate sequences (each ``[CLS] s [SEP]``, at most ``max_length`` tokens), stored like two
    choices; the model encodes them separately (:class:`aotp.models.TaskModel`).
    """
    from aotp.models.task_model import PAIR_ENCODINGS

    if pair_encoding not in PAIR_ENCODINGS:
        raise ValueError(f"data.pair_encoding={pair_encoding!r}; valid: {', '.join(PAIR_ENCODINGS)}")
    siamese = pair_encoding != "cross"
    if siamese:
        if any(example.get("choices") for example in examples):
            raise ValueError(f"data.pair_encoding={pair_encoding} needs sentence-pair examples; this task's examples are "
                             "multiple choice (use data.pair_encoding=cross)")
        if any(len(example["text"]) != 2 for example in examples):
            raise ValueError(f"data.pair_encoding={pair_encoding} needs sentence-pair examples; this task has single "
                             "sentences (use data.pair_encoding=cross)")
    flat_texts, owners = [], []
    for position, example in enumerate(examples):
        if siamese:
            texts = [(example["text"][0],), (example["text"][1],)]
        else:
            texts = example.get("choices") or [example["text"]]
        for text in texts:
            flat_texts.append(text)
            owners.append(position)
    firsts = [t[0] for t in flat_texts]
    seconds = [t[1] for t in flat_texts] if all(len(t) > 1 for t in flat_texts) else None
    if seconds is None and any(len(t) > 1 for t in flat_texts):
        raise ValueError("examples mix single sentences and pairs")
    encoded = tokenizer(firsts, seconds, truncation=True, max_length=max_length,
                        return_token_type_ids=uses_token_type_ids, return_attention_mask=False)
    features: list[dict[str, Any]] = [{"input_ids": [], "token_type_ids": []} for _ in examples]
    for row, owner in enumerate(owners):
        features[owner]["input_ids"].append(encoded["input_ids"][row])
        if uses_token_type_ids:
            features[owner]["token_type_ids"].append(encoded["token_type_ids"][row])
    for feature, example in zip(features, examples):
        if not (siamese or example.get("choices")):  # single sequence: unwrap the one-element list
            feature["input_ids"] = feature["input_ids"][0]
            feature["token_type_ids"] = feature["token_type_ids"][0] if uses_token_type_ids else None
        elif not uses_token_type_ids:
            feature["token_type_ids"] = None
        feature["label"] = example["label"]
    return features


def load_split(spec: TaskSpec, split: str, tokenizer, root: Optional[Path], *, labelled: bool, limit: Optional[int],
               seed: int, max_length: int, uses_token_type_ids: bool, cache_dir: Optional[Path],
               pair_encoding: str = "cross") -> SplitData:
    key_material = json.dumps([spec.full_name, spec.version, spec.fingerprint(), split, labelled,
                               source_fingerprint(spec, split, root), tokenizer_fingerprint(tokenizer), max_length,
                               uses_token_type_ids, limit, seed]
                              # appended only when set, so the caches of cross-encoded runs keep their keys
                              + (["siamese"] if pair_encoding != "cross" else []))
    key = hashlib.sha1(key_material.encode()).hexdigest()[:20]
    cache_file = Path(cache_dir) / "tokenized" / f"{spec.benchmark}-{spec.name}-{split}-{key}.pt" if cache_dir else None

    def tokenize_counting(examples):
        """Features at ``max_length`` and their truncation counts, tokenising every example once untruncated
        and again only those longer than ``max_length`` (a sequence that fits comes out of the tokenizer the
        same with or without truncation, so its untruncated features are its features)."""
        full = tokenize(examples, tokenizer, UNTRUNCATED, uses_token_type_ids, pair_encoding)
        over = [i for i, feature in enumerate(full) if max(map(len, sequences(feature)), default=0) > max_length]
        features = list(full)
        cut = tokenize([examples[i] for i in over], tokenizer, max_length, uses_token_type_ids, pair_encoding) if over else []
        for position, feature in zip(over, cut):
            features[position] = feature
        return features, truncation_stats(examples, features, full, max_length)

    def save(content):
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache_file.with_suffix(f".tmp{os.getpid()}")
        torch.save(content, temporary)
        os.replace(temporary, cache_file)

    if cache_file is not None and cache_file.is_file():
        cached = torch.load(cache_file, weights_only=False)
        if cached.get("truncation") is not None:  # else a cache written before truncation was counted: redone
            log.info("tokenised %s/%s from cache %s", spec.full_name, split, cache_file)
            return SplitData(split, cached["examples"], cached["features"], labelled, cached["truncation"])
    records = load_raw_records(spec, split, root)
    examples = FORMATTERS.get(spec.formatter).format(spec, records, labelled)
    examples = subset(examples, limit, seed)
    features, truncation = tokenize_counting(examples)
    if cache_file is not None:
        save({"examples": examples, "features": features, "truncation": truncation})
    return SplitData(split, examples, features, labelled, truncation)


def load_task_data(spec: TaskSpec, tokenizer, data_cfg, *, uses_token_type_ids: bool, seed: int,
                   cache_dir: Optional[Path], splits: Optional[list[str]] = None) -> TaskData:
    """Train + eval splits (labelled) and optionally test splits (unlabelled) of one task."""
    from aotp.models.task_model import pair_encoding_of  # here: the models package loads transformers

    root = Path(data_cfg["root"]) if data_cfg.get("root") else None
    max_length = int(data_cfg.get("max_length") or spec.max_length)
    wanted = splits or [s for s in (spec.train_split, *spec.eval_splits) if s]
    data = TaskData(spec)
    for split in wanted:
        is_train = split == spec.train_split
        limit = data_cfg.get("max_train_samples") if is_train else data_cfg.get("max_eval_samples")
        data.splits[split] = load_split(
            spec, split, tokenizer, root, labelled=split not in spec.test_splits, limit=limit,
            seed=int(data_cfg.get("subset_seed", 0)), max_length=max_length,
            uses_token_type_ids=uses_token_type_ids, cache_dir=cache_dir,
            pair_encoding=pair_encoding_of(data_cfg))
    return data


class Collator:
    """Dynamic padding: pad each batch to its longest sequence (across choices for multiple choice)."""

    def __init__(self, pad_token_id: int, label_dtype: torch.dtype):
        self.pad_token_id = pad_token_id
        self.label_dtype = label_dtype

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        multiple_choice = isinstance(features[0]["input_ids"][0], list)
        sequences = [s for f in features for s in (f["input_ids"] if multiple_choice else [f["input_ids"]])]
        length = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
        has_types = features[0].get("token_type_ids") is not None
        token_type_ids = torch.zeros((len(sequences), length), dtype=torch.long) if has_types else None
        types = [s for f in features for s in (f["token_type_ids"] if multiple_choice else [f["token_type_ids"]])] if has_types else None
        for row, sequence in enumerate(sequences):
            input_ids[row, : len(sequence)] = torch.tensor(sequence)
            attention_mask[row, : len(sequence)] = 1
            if has_types:
                token_type_ids[row, : len(sequence)] = torch.tensor(types[row])
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if has_types:
            batch["token_type_ids"] = token_type_ids
        if multiple_choice:
            choices = len(features[0]["input_ids"])
            batch = {k: v.view(len(features), choices, length) for k, v in batch.items()}
        if features[0]["label"] is not None:
            batch["labels"] = torch.tensor([f["label"] for f in features], dtype=self.label_dtype)
        return batch


def task_collator(spec: TaskSpec, pad_token_id: Optional[int]) -> Collator:
    """The collator of ``spec``'s batches: padded with the backbone's pad id (0 when it has none), labels as
    floats for a regression head and class / choice ids otherwise. Training, evaluation and serving of a
    run all batch through this one."""
    label_dtype = torch.float32 if spec.head == "regression" else torch.long
    return Collator(pad_token_id=pad_token_id or 0, label_dtype=label_dtype)
