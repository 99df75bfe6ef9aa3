"""Text-to-text formatting: a record becomes an `Example` (source text, target text).

The input is the reference implementation's: "prefix: value" pairs joined by spaces
(e.g. "premise: ... hypothesis: ..."), with three task-specific preparations taken
from T5 by way of the reference code (ATTEMPT/compacter, then DePT):

    "wsc"      mark the noun with * and the pronoun with # in the text
    "multirc"  drop the <b>/<br> markup of the passage
    "qa"       put spaces around punctuation (T5's pad_punctuation), answers too

The target is either a natural label word ("entailment") or the reference's label
index as a string ("0"); STS-B scores are rounded to the nearest 0.2 ("3.4").
"""

from __future__ import annotations

import re
import string
import unicodedata
import warnings
from typing import TYPE_CHECKING, Callable

from dept.tasks.errors import TaskError
from dept.tasks.records import Example, Record

if TYPE_CHECKING:
    from dept.tasks.registry import TaskSpec

TARGET_WORDS = ("natural", "index")


def check_target_words(target_words: str) -> str:
    if target_words not in TARGET_WORDS:
        raise TaskError(f"target_words must be one of {TARGET_WORDS}, not {target_words!r}")
    return target_words


def class_targets(spec: TaskSpec, target_words: str) -> list[str]:
    """The target string of each class index, in index order."""
    check_target_words(target_words)
    if target_words == "index":
        return [str(i) for i in range(len(spec.natural_words))]
    return list(spec.natural_words)


def stsb_target(score: float) -> str:
    """Round to the nearest 0.2 as T5 does (ties to even) and write one decimal: 3.35 -> "3.4".

    The reference code's round_stsb_target rounds to 0.1 instead (its `* 5 / 5`
    cancels out); we follow T5 and the paper's text, which say 0.2.
    """
    return f"{round(score * 5) / 5:.1f}"


def pad_punctuation(text: str) -> str:
    """T5's _pad_punctuation: spaces around every character that is not a letter,
    digit, combining mark, underscore or space; then collapse runs of spaces."""
    padded = "".join(
        ch if ch == "_" or ch.isspace() or unicodedata.category(ch)[0] in "LNM" else f" {ch} "
        for ch in text
    )
    return " ".join(padded.split())


def _remove_markup(text: str) -> str:
    return re.sub(r"</?b>", "", text.replace("<br>", " "))


def _prepare_multirc(record: Record) -> Record:
    return {**record, **{k: _remove_markup(record[k]) for k in ("paragraph", "question", "answer")}}


def _prepare_qa(record: Record) -> Record:
    answers = [pad_punctuation(a) for a in record["answers"]]
    return {
        **record,
        "question": pad_punctuation(record["question"]),
        "context": pad_punctuation(record["context"]),
        "answers": answers,
    }


def _span_pattern(span: str) -> str:
    # The official WSC files disagree with their own text in small ways that the hub's
    # wsc.fixed repairs (case of the first word, a newline, a trailing period): match
    # the span leniently, then mark the words as they stand in the text.
    words = span.replace("\n", " ").rstrip(".").split()
    return r"\s+".join(re.escape(w) for w in words)


def mark_span(text: str, index: int, span: str, mark: str) -> str | None:
    """Put `mark` around `span`, which starts at word `index` of `text` (T5's _mark_span).

    Words are runs of non-space characters, as in T5's pattern ^((?:\\S+\\s){N})(W).
    Returns None if the span is not at that position.
    """
    # (?!\w): unlike T5, never split a word ("he" must not match the start of "hers").
    found = re.match(r"((?:\S+\s){%d})(%s)(?!\w)" % (index, _span_pattern(span)), text, re.IGNORECASE)
    if found is None:
        return None
    head, words = found.group(1), found.group(2)
    return f"{head}{mark} {words} {mark}{text[found.end():]}"


def _prepare_wsc(record: Record) -> Record:
    text = record["text"]
    i1, i2 = record["span1_index"], record["span2_index"]
    marked = mark_span(text, i1, record["span1_text"], "*")
    if marked is not None:
        text = marked
        i2 += 2 * (i1 < i2)  # the two marks are two more words before a later span2
    marked2 = mark_span(text, i2, record["span2_text"], "#")
    text = text if marked2 is None else marked2
    if marked is None or marked2 is None:
        # The reference (like T5) leaves a span it cannot find unmarked; so do we, but
        # say so: a few rows of the official files point at the wrong word.
        where = record.get("_where", "a WSC record")
        warnings.warn(f"{where}: WSC span not found at its word index; left unmarked", stacklevel=3)
    return {**record, "text": text}


PREPARE: dict[str, Callable[[Record], Record]] = {
    "wsc": _prepare_wsc,
    "multirc": _prepare_multirc,
    "qa": _prepare_qa,
}


def template_fields(template: str) -> list[str]:
    """The column names an input template reads, once it is known to name plain fields only:
    "{premise}" or "{premise:>20}", never "{premise.attr}", "{premise[0]}", "{premise!r}" or a
    field nested in a format spec ("{x:{y}}"), which would reach into Python objects. A bad
    template is a TaskError naming it."""
    def bad(why: str) -> TaskError:
        return TaskError(f"input_template {template!r}: {why}")

    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as err:
        raise bad(str(err)) from None
    fields = []
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if not field.isidentifier():
            raise bad(f"{{{field}}} is not a plain column name (no attributes, indexes or positions)")
        if conversion:
            raise bad(f"{{{field}!{conversion}}}: conversions are not allowed")
        if "{" in spec or "}" in spec:
            raise bad(f"{{{field}:...}}: a format spec may not hold another field")
        fields.append(field)
    if not fields:
        raise bad("needs {column} fields naming columns")
    try:
        template.format_map({f: "text" for f in fields})  # a spec the text columns cannot take ("{x:d}")
    except (ValueError, TypeError) as err:
        raise bad(f"cannot format text columns ({err})") from None
    return fields


def format_source(spec: TaskSpec, record: Record, where: str = "record") -> str:
    """The input text of a record given as raw fields ({"sentence": ...}), as training formats it.
    A missing or non-text field is a TaskError naming `where` and the field."""
    needed = list(spec.field_names) if spec.input_template is not None else [f for _, f in spec.template]
    missing = [f for f in needed if f not in record]
    if missing:
        raise TaskError(f"{where}: missing field(s) {missing}; task {spec.name} reads {needed}")
    wrong = [f for f in needed if not isinstance(record[f], (str, int, float)) or isinstance(record[f], bool)]
    if wrong:
        raise TaskError(f"{where}: field(s) {wrong} must be text")
    record = {k: (v if isinstance(v, str) else str(v)) for k, v in record.items()}
    if spec.prepare is not None:
        try:
            record = PREPARE[spec.prepare](record)
        except KeyError as err:
            raise TaskError(f"{where}: missing field {err.args[0]!r} that task {spec.name} needs") from None
    return _source_text(spec, record)


def _source_text(spec: TaskSpec, record: Record) -> str:
    if spec.input_template is not None:
        return spec.input_template.format_map(record)
    return " ".join(f"{prefix} {record[field].strip()}" for prefix, field in spec.template)


def format_record(spec: TaskSpec, record: Record, target_words: str = "natural") -> Example:
    """One record as an Example, in the chosen target words."""
    if spec.prepare is not None:
        record = PREPARE[spec.prepare](record)
    source = _source_text(spec, record)
    if spec.kind == "classification":
        label = record["label"]
        return Example(source, class_targets(spec, target_words)[label], label, record.get("group"))
    if spec.kind == "regression":
        target = stsb_target(record["label"]) if spec.input_template is None else f"{record['label']:g}"
        return Example(source, target, record["label"])
    if spec.kind == "generation":
        return Example(source, record["label"], record["label"], answers=(record["label"],))
    answers = tuple(record["answers"])
    return Example(source, answers[0], answers[0], answers=answers)
