"""Formatting raw records into model examples, and model outputs back into predictions.

An example is a dict with ``text`` (a tuple of one or two strings), or ``choices`` (a list of such
tuples, for multiple choice), ``label`` (int, float or None on unlabelled test splits), ``idx`` and
optionally ``group`` (MultiRC question, ReCoRD query, AX-g pair) and other fields a formatter needs
to turn scores into predictions (ReCoRD's ``entity`` and ``answers``); every field survives the
tokenisation cache. A :class:`Formatter` has three steps, selected by ``formatter:`` in the spec
and configured by its ``format_options``; the runner never branches on a task name:

- ``format(spec, records, labelled) -> examples``
- ``predictions(spec, examples, scores) -> {predictions, references, groups, ids}`` (what
  :func:`aotp.metrics.compute_metrics` scores; one entry per scored unit: an example, or a ReCoRD query)
- ``submission_rows(spec, formatted) -> rows`` (``{"idx", "label"}`` per line of the leaderboard
  file; MultiRC nests answers under questions under passages)

Registered formatters: ``fields`` (sentence or sentence pair from ``text_fields`` or ``templates``),
``multiple_choice`` (COPA: context + each choice, softmax over choices), ``multirc`` (one example per
answer option, grouped by question), ``record`` (one example per candidate entity, the highest-scoring
entity answers its query), ``wsc_spans`` (the two spans marked in the text).
"""

from __future__ import annotations

import logging
import re
import string
from collections import Counter, OrderedDict
from typing import Any, Optional

import numpy as np

from aotp.registry import Registry
from aotp.tasks.loading import DataFileError
from aotp.tasks.spec import TaskSpec

log = logging.getLogger(__name__)


def parse_label(spec: TaskSpec, raw: Any, where: str, labelled: bool) -> Optional[float | int]:
    """Map a raw label (name, integer string, bool, float) to the task's label space."""
    if not labelled:
        return None
    if raw is None or raw == "" or (raw == -1 and not isinstance(raw, bool)):
        raise DataFileError(f"{where}: missing label for task {spec.full_name}")
    if spec.head == "regression":
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise DataFileError(f"{where}: label {raw!r} is not a number (task {spec.full_name} is a regression)") from None
        low, high = spec.format_options.get("label_range") or (-np.inf, np.inf)
        if not low <= value <= high or value != value:
            raise DataFileError(f"{where}: label {raw!r} is outside the label range [{low}, {high}] of {spec.full_name}")
        return value
    names = spec.label_names or []
    if isinstance(raw, bool):  # JSON true/false -> the label named "true"/"false" (any case)
        matches = [i for i, name in enumerate(names) if name.lower() == str(raw).lower()]
        if matches:
            return matches[0]
        raise DataFileError(f"{where}: label {raw!r} is not in the label set of {spec.full_name}: {names}")
    if isinstance(raw, str) and raw in names:
        return names.index(raw)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = None
    if value is not None and str(value) == str(raw).strip() and 0 <= value < len(names) and str(value) not in names:
        return value
    raise DataFileError(f"{where}: label {raw!r} is not in the label set of {spec.full_name}: {names}"
                        + (f" (or their ids 0..{len(names) - 1})" if names else ""))


def _field(record: dict[str, Any], name: str, spec: TaskSpec, where: str) -> Any:
    try:
        value = record[name]
    except KeyError:
        raise DataFileError(f"{where}: missing field {name!r} (task {spec.full_name}, formatter {spec.formatter}); "
                            f"found fields {sorted(k for k in record if k != '_where')}") from None
    if value is None:
        raise DataFileError(f"{where}: field {name!r} is null (task {spec.full_name})")
    return value


def _fill(template: str, record: dict[str, Any], spec: TaskSpec, where: str, **extra: Any) -> str:
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    values = {name: (extra[name] if name in extra else _field(record, name, spec, where)) for name in names}
    return template.format(**values)


def submission_label(spec: TaskSpec, prediction: Any) -> Any:
    """One prediction as the leaderboard file writes it (``submission.labels``)."""
    kind = (spec.submission or {}).get("labels", "names")
    if isinstance(kind, list):
        return kind[int(prediction)]
    if kind == "names":
        return spec.label_names[int(prediction)]
    if kind == "ids":
        return int(prediction)
    if kind == "float":
        value = float(prediction)
        clip = (spec.submission or {}).get("clip")
        return float(min(max(value, clip[0]), clip[1])) if clip else value
    return prediction  # text (ReCoRD entities)


def _as_scores(spec: TaskSpec, examples: list, scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores)
    if len(scores) != len(examples):
        raise ValueError(f"task {spec.full_name}: {len(scores)} scores for {len(examples)} examples")
    return scores


class Formatter:
    """The default (``fields``): a sentence or sentence pair per record.

    Text: ``text_fields`` (one field, or two joined as a sentence pair), or
    ``format_options.templates``: one or two Python format strings over the record's fields
    (``"{sentence1} {sentence2} Does {word} have the same meaning in both sentences?"``).
    ``format_options.group_field`` puts a field into ``group`` (AX-g ``pair_id`` for gender parity).
    """

    def format(self, spec: TaskSpec, records: list[dict[str, Any]], labelled: bool) -> list[dict[str, Any]]:
        options = spec.format_options
        templates = options.get("templates")
        if templates is None and not 1 <= len(spec.text_fields) <= 2:
            raise ValueError(f"task {spec.full_name}: text_fields must name one or two fields, got {spec.text_fields}")
        group_field = options.get("group_field")
        examples = []
        for position, record in enumerate(records):
            where = record.get("_where", f"record {position}")
            if templates is not None:
                text = tuple(_fill(t, record, spec, where) for t in templates)
            else:
                text = tuple(str(_field(record, f, spec, where)) for f in spec.text_fields)
            example = {"text": text, "label": parse_label(spec, record.get("label"), where, labelled),
                       "idx": record.get("idx", position)}
            if group_field:
                example["group"] = record.get(group_field)
            examples.append(example)
        if group_field:
            self._fill_missing_groups(spec, records, examples, group_field)
        return examples

    @staticmethod
    def _fill_missing_groups(spec, records, examples, group_field) -> None:
        missing = [i for i, e in enumerate(examples) if e["group"] is None]
        if not missing:
            return
        fallback = spec.format_options.get("group_fallback")
        if fallback != "consecutive_pairs" or len(missing) != len(examples) or len(examples) % 2:
            where = records[missing[0]].get("_where", f"record {missing[0]}")
            raise DataFileError(f"{where}: missing field {group_field!r} (task {spec.full_name} groups by it)")
        # The hub's AX-g has no pair_id; its rows are consecutive male/female pairs. Number them as the
        # released file does (variants of one sentence have pair ids p and p + 2, two sentences per block of 4).
        for row, example in enumerate(examples):
            pair, variant = divmod(row, 2)
            example["group"] = 4 * (pair // 2) + pair % 2 + 2 * variant
        log.warning("task %s: %d records without %r; paired consecutive rows (%s)", spec.full_name, len(examples),
                    group_field, fallback)

    def predictions(self, spec: TaskSpec, examples: list[dict[str, Any]], scores: np.ndarray) -> dict[str, Any]:
        """Scores (N, k) / (N,) / (N, C) -> predictions, references and groups for the metrics."""
        scores = _as_scores(spec, examples, scores)
        if spec.head == "regression":
            predictions = scores.reshape(len(examples))
        else:
            predictions = scores.argmax(-1)
        groups = [e["group"] for e in examples] if examples and "group" in examples[0] else None
        return {"predictions": predictions, "references": [e["label"] for e in examples], "groups": groups,
                "ids": [e["idx"] for e in examples]}

    def submission_rows(self, spec: TaskSpec, formatted: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"idx": idx, "label": submission_label(spec, p)}
                for idx, p in zip(formatted["ids"], formatted["predictions"])]


class MultipleChoiceFormatter(Formatter):
    """COPA-style: one (context, choice) pair per choice; the label is the right choice's index.

    Options: ``choice_fields`` ([choice1, choice2]), ``context_template`` (format string over the
    record plus ``{connector}``), ``connector_field`` and ``connectors`` (field value -> connector
    word, e.g. question ``cause`` -> ``because``, ``effect`` -> ``so``).
    """

    def format(self, spec: TaskSpec, records: list[dict[str, Any]], labelled: bool) -> list[dict[str, Any]]:
        options = spec.format_options
        choice_fields = list(options["choice_fields"])
        connectors = dict(options.get("connectors") or {})
        connector_field = options.get("connector_field")
        examples = []
        for position, record in enumerate(records):
            where = record.get("_where", f"record {position}")
            extra = {}
            if connector_field:
                value = _field(record, connector_field, spec, where)
                if value not in connectors:
                    raise DataFileError(f"{where}: {connector_field}={value!r} is not one of {sorted(connectors)} "
                                        f"(task {spec.full_name})")
                extra["connector"] = connectors[value]
            context = _fill(options["context_template"], record, spec, where, **extra)
            choices = [(context, str(_field(record, f, spec, where))) for f in choice_fields]
            examples.append({"choices": choices, "label": parse_label(spec, record.get("label"), where, labelled),
                             "idx": record.get("idx", position)})
        return examples


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[a-z0-9]+")
# Words that match between any question and any sentence, so they carry no evidence.
_FUNCTION_WORDS = frozenset(
    "a an and are as at be been but by did do does for from had has have he her his how i in is it its of on or "
    "she that the their them they this to was were what when where which who why will with would you".split())


def select_evidence(paragraph: str, query: str, budget_words: int) -> str:
    """The paragraph's sentences that share the most content words with ``query``, in paragraph order,
    up to ``budget_words`` words (at least one sentence); the whole paragraph when it fits.

    Score of a sentence = sum over content words w shared with ``query`` of 1 / df(w), where df(w) is
    the number of the paragraph's sentences containing w (a word the whole paragraph repeats says
    little about which sentence is the evidence); ties keep the earlier sentence. Used where the
    sequence budget cannot hold the passage (MultiRC passages run to ~300 words; a 128-token window
    otherwise keeps only the first third, which rarely holds the evidence).
    """
    sentences = [s for s in _SENTENCE_END.split(paragraph.strip()) if s]
    if sum(len(s.split()) for s in sentences) <= budget_words:
        return paragraph
    query_words = set(_WORD.findall(query.lower())) - _FUNCTION_WORDS
    sentence_words = [set(_WORD.findall(s.lower())) & query_words for s in sentences]
    document_frequency = Counter(word for words in sentence_words for word in words)
    scores = [sum(1.0 / document_frequency[word] for word in words) for words in sentence_words]
    chosen, used = [], 0
    for position in sorted(range(len(sentences)), key=lambda i: (-scores[i], i)):
        words = len(sentences[position].split())
        if chosen and used + words > budget_words:
            continue
        chosen.append(position)
        used += words
    return " ".join(sentences[i] for i in sorted(chosen))


class MultiRCFormatter(Formatter):
    """MultiRC: one example per answer option, (paragraph, "question answer"), label 0/1,
    ``group`` = (passage idx, question idx), ``idx`` = [passage, question, answer] idx.

    Reads the official nested JSONL (``passage.questions[].answers[]``) and the hub's flat rows
    (``paragraph``, ``question``, ``answer``, ``idx: {paragraph, question, answer}``). Options:
    ``question_answer_template`` (default ``"{question} {answer}"``); ``evidence_words`` (default 0:
    the whole paragraph, truncated by the tokenizer as usual; N > 0: only the paragraph's sentences
    most related to the question and answer, up to N words, see :func:`select_evidence`).
    """

    def format(self, spec: TaskSpec, records: list[dict[str, Any]], labelled: bool) -> list[dict[str, Any]]:
        template = spec.format_options.get("question_answer_template", "{question} {answer}")
        budget = int(spec.format_options.get("evidence_words", 0) or 0)
        if budget < 0:
            raise ValueError(f"task {spec.full_name}: format_options.evidence_words must be >= 0, got {budget}")

        def passage_for(paragraph: str, question_answer: str) -> str:
            return select_evidence(paragraph, question_answer, budget) if budget else paragraph
        examples = []
        for position, record in enumerate(records):
            where = record.get("_where", f"record {position}")
            if isinstance(record.get("passage"), dict):  # official nested layout
                passage = record["passage"]
                paragraph = str(_field(passage, "text", spec, where))
                p_idx = _field(record, "idx", spec, where)
                for q_number, question in enumerate(_field(passage, "questions", spec, where)):
                    q_where = f"{where} (question {q_number})"
                    q_idx = _field(question, "idx", spec, q_where)
                    answers = _field(question, "answers", spec, q_where)
                    if not answers:
                        raise DataFileError(f"{q_where}: question has no answer options (task {spec.full_name})")
                    for a_number, answer in enumerate(answers):
                        a_where = f"{q_where} answer {a_number}"
                        text = template.format(question=_field(question, "question", spec, q_where),
                                               answer=_field(answer, "text", spec, a_where))
                        examples.append({"text": (passage_for(paragraph, text), text),
                                         "label": parse_label(spec, answer.get("label"), a_where, labelled),
                                         "idx": [p_idx, q_idx, _field(answer, "idx", spec, a_where)],
                                         "group": (p_idx, q_idx)})
            else:  # the hub's flat rows
                idx = _field(record, "idx", spec, where)
                text = template.format(question=_field(record, "question", spec, where),
                                       answer=_field(record, "answer", spec, where))
                ids = [idx["paragraph"], idx["question"], idx["answer"]]
                examples.append({"text": (passage_for(str(_field(record, "paragraph", spec, where)), text), text),
                                 "label": parse_label(spec, record.get("label"), where, labelled),
                                 "idx": ids, "group": (ids[0], ids[1])})
        return examples

    def submission_rows(self, spec: TaskSpec, formatted: dict[str, Any]) -> list[dict[str, Any]]:
        passages: OrderedDict = OrderedDict()
        for (p_idx, q_idx, a_idx), prediction in zip(formatted["ids"], formatted["predictions"]):
            questions = passages.setdefault(p_idx, OrderedDict())
            questions.setdefault(q_idx, []).append({"idx": a_idx, "label": submission_label(spec, prediction)})
        return [{"idx": p_idx, "passage": {"questions": [{"idx": q_idx, "answers": answers}
                                                         for q_idx, answers in questions.items()]}}
                for p_idx, questions in passages.items()]


class RecordFormatter(Formatter):
    """ReCoRD: one example per (query, candidate entity): (passage, query with ``@placeholder`` filled
    by the entity), label 1 when the entity is a gold answer. The prediction for a query is its
    highest-scoring entity (score = logit(answer) - logit(not answer)); ``record_f1``/``record_em``
    take the max over all gold answers.

    Candidates are the passage's entity mentions as unique strings, in order of first mention
    (official JSONL: ``text[start:end + 1]``, ``end`` inclusive; hub: ``entity_spans`` ordered by start, or
    where a row lacks them the ``entities`` list, which the hub sorts alphabetically).
    Option ``highlight_replacement`` (default ``"- "``) replaces ``"@highlight\\n"`` in the passage.
    """

    def format(self, spec: TaskSpec, records: list[dict[str, Any]], labelled: bool) -> list[dict[str, Any]]:
        highlight = spec.format_options.get("highlight_replacement", "- ")
        placeholder = spec.format_options.get("placeholder", "@placeholder")
        examples: list[dict[str, Any]] = []
        unreachable = 0
        for position, record in enumerate(records):
            where = record.get("_where", f"record {position}")
            for passage_text, entities, query, q_idx, answers, q_where in self._queries(spec, record, where, labelled):
                if placeholder not in query:
                    raise DataFileError(f"{q_where}: query has no {placeholder!r}: {query!r}")
                if not entities:
                    raise DataFileError(f"{q_where}: passage has no candidate entities (task {spec.full_name})")
                if labelled and not answers:
                    raise DataFileError(f"{q_where}: query has no gold answers (task {spec.full_name})")
                if labelled and not set(answers) & set(entities):
                    unreachable += 1
                text = passage_text.replace("@highlight\n", highlight)
                for entity in entities:
                    examples.append({"text": (text, query.replace(placeholder, entity)),
                                     "label": int(entity in answers) if labelled else None,
                                     "idx": q_idx, "group": q_idx, "entity": entity,
                                     "answers": answers if labelled else None})
        if unreachable:
            log.warning("task %s: %d queries have no gold answer among their candidate entities; they are kept "
                        "and score 0", spec.full_name, unreachable)
        return examples

    @staticmethod
    def _queries(spec, record, where, labelled):
        passage = record.get("passage")
        if isinstance(passage, dict):  # official nested layout
            text = str(_field(passage, "text", spec, where))
            entities = []
            for entity in _field(passage, "entities", spec, where):
                surface = text[int(entity["start"]):int(entity["end"]) + 1]
                if surface not in entities:
                    entities.append(surface)
            for number, qa in enumerate(_field(record, "qas", spec, where)):
                q_where = f"{where} (query {number})"
                answers = []
                for answer in (qa.get("answers") or []) if labelled else []:
                    if answer["text"] not in answers:
                        answers.append(answer["text"])
                yield text, entities, str(_field(qa, "query", spec, q_where)), _field(qa, "idx", spec, q_where), \
                    answers, q_where
        else:  # the hub's flat rows: one query per row
            idx = _field(record, "idx", spec, where)
            # ``entities`` is sorted alphabetically on the hub; ``entity_spans`` (every mention, by start) gives
            # the passage's mention order, so both layouts list a query's candidates in the same order
            spans = record.get("entity_spans")
            if spans and spans.get("text"):
                order = sorted(range(len(spans["text"])), key=lambda i: spans["start"][i])
                entities = list(dict.fromkeys(spans["text"][i] for i in order))
            else:
                entities = list(dict.fromkeys(_field(record, "entities", spec, where)))
            answers = list(dict.fromkeys(record.get("answers") or [])) if labelled else []
            yield str(_field(record, "passage", spec, where)), entities, str(_field(record, "query", spec, where)), \
                idx["query"] if isinstance(idx, dict) else idx, answers, where

    def predictions(self, spec: TaskSpec, examples: list[dict[str, Any]], scores: np.ndarray) -> dict[str, Any]:
        scores = _as_scores(spec, examples, scores)
        margin = scores[:, 1] - scores[:, 0] if scores.ndim == 2 and scores.shape[1] == 2 else scores.reshape(len(examples))
        best: OrderedDict = OrderedDict()  # query idx -> (score, entity, answers)
        for example, value in zip(examples, margin.tolist()):
            query = example["group"]
            if query not in best or value > best[query][0]:
                best[query] = (value, example["entity"], example["answers"])
        return {"predictions": [entity for _, entity, _ in best.values()],
                "references": [answers for _, _, answers in best.values()], "groups": None, "ids": list(best)}


class WSCSpansFormatter(Formatter):
    """WSC: the text with span1 (the candidate referent) and span2 (the pronoun) marked in place,
    ``*span1*`` and ``#span2#`` by default (``format_options.markers``); label true when span2 refers
    to span1.

    ``span*_index`` indexes ``text.split()``. A span is found at its index (case, surrounding
    punctuation and a possessive ``'s`` ignored); failing that, at the nearest index where its words
    occur; failing that, its first word nearest the index is marked (e.g. "Kamenev and Zinoviev" written
    "Lev Kamenev, ... and Grigory Zinoviev"). Realigned and partial spans are counted in a warning.
    Reads the official ``target: {span1_index, ...}`` and the hub's flat ``span1_index`` fields.
    """

    _TOKEN = re.compile(r"^(\W*)(.*?)((?:['’]s)?\W*)$", re.S)

    @classmethod
    def _norm(cls, token: str) -> str:
        return cls._TOKEN.match(token).group(2).lower()

    def _locate(self, tokens: list[str], span_text: str, index: int) -> tuple[int, int, str]:
        words = [self._norm(w) for w in span_text.split()]
        normed = [self._norm(t) for t in tokens]
        n = len(words)
        if normed[index:index + n] == words:
            return index, index + n, "exact"
        starts = [i for i in range(len(tokens) - n + 1) if normed[i:i + n] == words]
        if starts:
            start = min(starts, key=lambda i: (abs(i - index), i))
            return start, start + n, "realigned"
        starts = [i for i, t in enumerate(normed) if t == words[0]]
        if starts:
            start = min(starts, key=lambda i: (abs(i - index), i))
            return start, start + 1, "partial"
        raise LookupError(span_text)

    def _mark(self, tokens: list[str], start: int, end: int, marker: str) -> None:
        first = self._TOKEN.match(tokens[start])
        last = self._TOKEN.match(tokens[end - 1])
        if start == end - 1:
            tokens[start] = f"{first.group(1)}{marker}{first.group(2)}{marker}{first.group(3)}"
            return
        tokens[start] = f"{first.group(1)}{marker}{first.group(2)}{first.group(3)}"
        tokens[end - 1] = f"{last.group(1)}{last.group(2)}{marker}{last.group(3)}"

    def format(self, spec: TaskSpec, records: list[dict[str, Any]], labelled: bool) -> list[dict[str, Any]]:
        markers = list(spec.format_options.get("markers") or ["*", "#"])
        counts = {"realigned": 0, "partial": 0}
        first_where: dict[str, str] = {}
        examples = []
        for position, record in enumerate(records):
            where = record.get("_where", f"record {position}")
            target = record["target"] if isinstance(record.get("target"), dict) else record
            text = str(_field(record, "text", spec, where))
            tokens = text.split()
            located = []
            for k in ("1", "2"):
                span_text = str(_field(target, f"span{k}_text", spec, where))
                index = int(_field(target, f"span{k}_index", spec, where))
                try:
                    start, end, how = self._locate(tokens, span_text, index)
                except LookupError:
                    raise DataFileError(f"{where}: span{k}_text {span_text!r} (span{k}_index {index}) does not occur "
                                        f"in the text's words {tokens}") from None
                if how != "exact":
                    counts[how] += 1
                    first_where.setdefault(how, where)
                located.append((start, end))
            for (start, end), marker in zip(located, markers):
                self._mark(tokens, start, end, marker)
            examples.append({"text": (" ".join(tokens),),
                             "label": parse_label(spec, record.get("label"), where, labelled),
                             "idx": record.get("idx", position)})
        for how, count in counts.items():
            if count:
                log.warning("task %s: %d span(s) not at their span index were marked %s (first: %s)",
                            spec.full_name, count, "where their words occur nearest" if how == "realigned"
                            else "by their first word only", first_where[how])
        return examples


FORMATTERS: Registry[Formatter] = Registry("task formatter", option="task.formatter")
FORMATTERS.register("fields")(Formatter())
FORMATTERS.register("multiple_choice")(MultipleChoiceFormatter())
FORMATTERS.register("multirc")(MultiRCFormatter())
FORMATTERS.register("record")(RecordFormatter())
FORMATTERS.register("wsc_spans")(WSCSpansFormatter())
