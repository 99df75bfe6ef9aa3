"""THE table: every task as data (files, reader, template, label words, metrics, splits).

Adding a task is adding a row. A `TaskSpec` says where the official files sit
(`folders` / `files`, relative to the folder the user downloads), which reader
parses them, which file column feeds which record field, how labels are written
in the file (`file_labels`: text -> class index, whose order is also the hub's
ClassLabel order), the input template, the natural word of each class, the
metrics, and how the paper builds its splits (`paper_split`):

    "halve"    small sets: official validation split in half -> validation, test
    "holdout"  large sets (>10k train): 1,000 train rows -> validation; official
               validation (or labelled test) -> test
    "mnli"     MNLI: mismatched -> validation, matched -> test
    "official" the official train / validation / test (labelled test: PAWS)

The membership of each task in "halve" / "holdout" follows the reference code's
lists (small_datasets_without_all_splits / large_data_without_all_splits).

`metrics` are in the reference's order (its TASK_TO_METRICS): the first is the main
metric, which picks the best checkpoint and is reported first, as the reference's
metric_for_best_model = TASK_TO_METRICS[task][0]. So MRPC and QQP select by accuracy,
CB by macro-F1, MultiRC by F1a, STS-B by Pearson and the QA tasks by exact match.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from dept.tasks.errors import TaskError

KINDS = ("classification", "regression", "extractive_qa", "generation")
PAPER_SPLITS = ("halve", "holdout", "mnli", "official")
METRICS = ("accuracy", "f1", "f1_macro", "matthews_correlation", "pearson", "spearman", "em", "rougeL")


@dataclass(frozen=True)
class HubSource:
    """Where the same records live on the Hugging Face hub."""

    path: str  # dataset repository id
    config: str | None = None  # dataset config name
    label_column: str = "label"  # column holding the label
    subset: str | None = None  # MRQA: keep only rows whose "subset" is this
    unescape_csv_quotes: bool = False  # Yelp: the hub text keeps the CSV's doubled quotes


@dataclass(frozen=True, eq=False)
class TaskSpec:
    name: str  # lower-case key of TASKS
    suite: str  # glue, superglue, mrqa, other, dept
    kind: str  # classification | regression | extractive_qa
    folders: tuple[str, ...]  # the task's folder name(s) in the official download
    files: dict[str, str]  # official split -> file path inside the task folder
    reader: str  # file format, a key of readers.READERS
    template: tuple[tuple[str, str], ...]  # (prefix, record field) pairs of the input text
    metrics: tuple[str, ...]  # metric names compute_metrics returns
    paper_split: str  # how the paper builds train/validation/test, see module doc
    columns: tuple[tuple[str, str], ...] = ()  # (record field, file column or dotted key); default: template fields
    label_column: str = "label"  # file column or key of the label
    names: tuple[str, ...] | None = None  # column names of a header-less delimited file
    file_labels: dict[str, int] = field(default_factory=dict)  # label as written -> class index
    natural_words: tuple[str, ...] = ()  # natural target word of each class index
    prepare: str | None = None  # record preparation in templates.PREPARE
    hub: HubSource | None = None  # the hub copy of the same records
    aliases: tuple[str, ...] = ()  # other names get_task accepts
    score_range: tuple[float, float] = (0.0, 5.0)  # regression: valid gold scores
    main_metric: str = ""  # the metric to select checkpoints by; default: metrics[0] (a user's task sets it)
    input_template: str | None = None  # a user's task: Python format string over the record's fields

    def __post_init__(self) -> None:
        if not self.columns:
            object.__setattr__(self, "columns", tuple((f, f) for _, f in self.template))
        if not self.main_metric:
            object.__setattr__(self, "main_metric", self.metrics[0])
        assert self.kind in KINDS and self.paper_split in PAPER_SPLITS, self.name
        assert set(self.metrics) <= set(METRICS) and self.main_metric in self.metrics, self.name
        if self.kind == "classification":
            assert sorted(set(self.file_labels.values())) == list(range(len(self.natural_words))), self.name

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f for f, _ in self.columns)

    @property
    def num_classes(self) -> int:
        return len(self.natural_words)


BINARY = {"0": 0, "1": 1}
BOOL = {"false": 0, "true": 1}
NLI2 = {"entailment": 0, "not_entailment": 1}
GLUE_FILES = {"train": "train.tsv", "validation": "dev.tsv"}
SUPERGLUE_FILES = {"train": "train.jsonl", "validation": "val.jsonl"}
PAIR = (("sentence1:", "sentence1"), ("sentence2:", "sentence2"))
PREMISE = (("premise:", "premise"), ("hypothesis:", "hypothesis"))
QA = (("question:", "question"), ("context:", "context"))


def _glue(name, folder, template, words, labels, metrics, split, **kw) -> TaskSpec:
    return TaskSpec(
        name, "glue", kw.pop("kind", "classification"), (folder,), kw.pop("files", GLUE_FILES),
        "tsv", template, metrics, split, natural_words=words, file_labels=labels,
        hub=HubSource("nyu-mll/glue", kw.pop("config", name)), **kw,
    )  # fmt: skip


def _superglue(name, folder, template, words, labels, metrics=("accuracy",), **kw) -> TaskSpec:
    return TaskSpec(
        name, "superglue", "classification", (folder,), SUPERGLUE_FILES, kw.pop("reader", "jsonl"),
        template, metrics, "halve", natural_words=words, file_labels=labels,
        hub=HubSource("aps/super_glue", kw.pop("config", name)),
        aliases=(f"superglue-{folder.lower()}",) + kw.pop("aliases", ()), **kw,
    )  # fmt: skip


def _mrqa(name, file_stem, aliases=()) -> TaskSpec:
    return TaskSpec(
        name, "mrqa", "extractive_qa", ("mrqa", "MRQA"),
        {"train": f"train/{file_stem}.jsonl.gz", "validation": f"dev/{file_stem}.jsonl.gz"},
        "mrqa", QA, ("em", "f1"), "holdout", prepare="qa",
        hub=HubSource("mrqa-workshop/mrqa", subset=file_stem), aliases=aliases,
    )  # fmt: skip


_SPECS = [
    # ---- GLUE: <TASK>/train.tsv, dev.tsv -------------------------------------------
    _glue("cola", "CoLA", (("sentence:", "sentence"),), ("unacceptable", "acceptable"), BINARY,
          ("matthews_correlation",), "halve", names=("source", "label", "mark", "sentence")),
    _glue("sst2", "SST-2", (("sentence:", "sentence"),), ("negative", "positive"), BINARY,
          ("accuracy",), "holdout"),
    _glue("mrpc", "MRPC", PAIR, ("not_equivalent", "equivalent"), BINARY, ("accuracy", "f1"), "halve",
          columns=(("sentence1", "#1 String"), ("sentence2", "#2 String")), label_column="Quality"),
    _glue("qqp", "QQP", (("question1:", "question1"), ("question2:", "question2")),
          ("not_duplicate", "duplicate"), BINARY, ("accuracy", "f1"), "holdout",
          label_column="is_duplicate"),
    _glue("stsb", "STS-B", PAIR, (), {}, ("pearson", "spearman"), "halve", kind="regression",
          label_column="score"),
    _glue("mnli", "MNLI", PREMISE, ("entailment", "neutral", "contradiction"),
          {"entailment": 0, "neutral": 1, "contradiction": 2}, ("accuracy",), "mnli",
          files={"train": "train.tsv", "validation_matched": "dev_matched.tsv",
                 "validation_mismatched": "dev_mismatched.tsv"},
          columns=(("premise", "sentence1"), ("hypothesis", "sentence2")), label_column="gold_label"),
    _glue("qnli", "QNLI", (("question:", "question"), ("sentence:", "sentence")),
          ("entailment", "not_entailment"), NLI2, ("accuracy",), "holdout"),
    _glue("rte", "RTE", PAIR, ("entailment", "not_entailment"), NLI2, ("accuracy",), "halve"),
    # ---- SuperGLUE: <Task>/train.jsonl, val.jsonl ----------------------------------
    _superglue("superglue-rte", "RTE", PREMISE, ("entailment", "not_entailment"), NLI2,
               config="rte", aliases=("rte-superglue",)),
    _superglue("boolq", "BoolQ", (("question:", "question"), ("passage:", "passage")),
               ("false", "true"), BOOL),
    # CB: the reference's f1_multiclass, the unweighted mean of the 3 classes' F1, first.
    _superglue("cb", "CB", PREMISE, ("entailment", "contradiction", "neutral"),
               {"entailment": 0, "contradiction": 1, "neutral": 2}, ("f1_macro", "accuracy")),
    _superglue("copa", "COPA", (("premise:", "premise"), ("choice1:", "choice1"),
                                ("choice2:", "choice2"), ("question:", "question")),
               ("choice1", "choice2"), BINARY),
    _superglue("wic", "WiC", PAIR + (("word:", "word"),), ("false", "true"), BOOL,
               columns=tuple((f, f) for f in ("sentence1", "sentence2", "word", "start1", "end1",
                                              "start2", "end2"))),
    _superglue("wsc", "WSC", (("text:", "text"),), ("false", "true"), BOOL, prepare="wsc",
               config="wsc.fixed", aliases=("superglue-wsc.fixed", "wsc.fixed"),
               columns=(("text", "text"),) + tuple(
                   (f"span{i}_{k}", f"target.span{i}_{k}") for i in (1, 2) for k in ("index", "text"))),
    # MultiRC: "f1" is F1a, binary F1 over every answer option pooled (the reference's
    # multirc_f1_over_all_answers); "em" is the share of questions with all options right.
    _superglue("multirc", "MultiRC", (("question:", "question"), ("answer:", "answer"),
                                      ("paragraph:", "paragraph")),
               ("false", "true"), BINARY, ("f1", "em"), reader="multirc", prepare="multirc"),
    # ---- MRQA 2019 shared task: train/<Name>.jsonl.gz, dev/<Name>.jsonl.gz ------------
    _mrqa("newsqa", "NewsQA"),
    _mrqa("searchqa", "SearchQA"),
    _mrqa("hotpotqa", "HotpotQA"),
    _mrqa("naturalquestions", "NaturalQuestionsShort", aliases=("nq", "naturalquestionsshort")),
    # ---- other suites, each in the layout of its own official download ---------------
    TaskSpec("squad", "mrqa", "extractive_qa", ("squad", "SQuAD"),
             {"train": "train-v1.1.json", "validation": "dev-v1.1.json"}, "squad", QA, ("em", "f1"),
             "holdout", prepare="qa", hub=HubSource("rajpurkar/squad")),
    TaskSpec("winogrande", "other", "classification", ("winogrande_1.1", "winogrande"),
             {"train": "train_xl.jsonl", "validation": "dev.jsonl"}, "jsonl",
             # The reference labels the options option0/option1 (and, by a typo, puts
             # option1's text in both); we keep its prefixes and give each its own text.
             (("sentence:", "sentence"), ("option0:", "option1"), ("option1:", "option2")),
             ("accuracy",), "holdout", label_column="answer", file_labels={"1": 0, "2": 1},
             natural_words=("option0", "option1"),
             hub=HubSource("allenai/winogrande", "winogrande_xl", label_column="answer")),
    TaskSpec("yelp_polarity", "other", "classification", ("yelp_review_polarity_csv", "yelp_polarity"),
             {"train": "train.csv", "test": "test.csv"}, "csv", (("sentence:", "text"),),
             ("accuracy",), "holdout", names=("label", "text"), file_labels={"1": 0, "2": 1},
             natural_words=("negative", "positive"), aliases=("yelp", "yelp-2", "yelp2"),
             hub=HubSource("fancyzhx/yelp_polarity", unescape_csv_quotes=True)),
    TaskSpec("scitail", "other", "classification", ("SciTailV1.1", "SciTailV1", "scitail"),
             {s: f"tsv_format/scitail_1.0_{f}.tsv" for s, f in
              (("train", "train"), ("validation", "dev"), ("test", "test"))},
             "tsv", PREMISE, ("accuracy",), "halve", names=("premise", "hypothesis", "label"),
             file_labels={"entails": 0, "neutral": 1}, natural_words=("entailment", "neutral"),
             hub=HubSource("allenai/scitail", "tsv_format")),
    TaskSpec("paws", "other", "classification", ("final", "paws", "paws_wiki"),
             {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}, "tsv", PAIR,
             ("accuracy",), "official", file_labels=BINARY,
             natural_words=("not_paraphrase", "paraphrase"), aliases=("paws-wiki", "paws_wiki"),
             hub=HubSource("google-research-datasets/paws", "labeled_final")),
    # ---- dept's own: a few short reviews shipped in the package (SST-2 format) ----------
    TaskSpec("demo", "dept", "classification", ("demo",), GLUE_FILES, "tsv",
             (("sentence:", "sentence"),), ("accuracy",), "halve", file_labels=BINARY,
             natural_words=("negative", "positive")),
]  # fmt: skip

# Read-only: the table is data, and nothing adds to it at run time.
TASKS: Mapping[str, TaskSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})


def _norm(name: str) -> str:
    return re.sub(r"[\s\-_.]", "", name.lower())


_LOOKUP: dict[str, str] = {}
for _spec in _SPECS:
    for _name in (_spec.name, *_spec.aliases):
        assert _norm(_name) not in _LOOKUP or _LOOKUP[_norm(_name)] == _spec.name, _name
        _LOOKUP[_norm(_name)] = _spec.name


def is_builtin(name: str) -> bool:
    """Whether `name` (or an alias, spelled loosely) is a task of the table."""
    return _norm(str(name)) in _LOOKUP


def get_task(task: str | TaskSpec) -> TaskSpec:
    """The spec of a built-in task by name or alias, ignoring case, '-', '_', '.' and spaces. A
    TaskSpec is returned as it is: a user's own task travels as its spec (tasks/custom.py), never
    by a name that two adapters could share."""
    if isinstance(task, TaskSpec):
        return task
    key = _LOOKUP.get(_norm(str(task)))
    if key is None:
        raise TaskError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[key]
