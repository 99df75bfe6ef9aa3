"""Readers and templates on small files written in each official format.

These cover the tasks whose files are not on this machine (QQP, MNLI, QNLI train,
BoolQ train, WiC, MultiRC, MRQA, SQuAD, WinoGrande, Yelp, SciTail, PAWS). The
writers here are reused by the error and hub tests.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from dept.tasks import find_tasks, load_task

MNLI_TRAIN_HEADER = ("index promptID pairID genre sentence1_binary_parse sentence2_binary_parse "
                     "sentence1_parse sentence2_parse sentence1 sentence2 label1 gold_label").split()
MNLI_DEV_HEADER = MNLI_TRAIN_HEADER[:-1] + ["label2", "label3", "label4", "label5", "gold_label"]
MNLI_LABELS = ["entailment", "neutral", "contradiction"]


def write_tsv(path: Path, header: list[str] | None, rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (["\t".join(header)] if header else []) + ["\t".join(str(c) for c in r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path, objs: list[dict], gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(o) + "\n" for o in objs)
    path.write_bytes(gzip.compress(text.encode())) if gz else path.write_text(text, encoding="utf-8")
    return path


def write_qqp(root: Path, n_train: int = 6, n_dev: int = 4) -> Path:
    header = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
    rows = lambda n: [[i, 2 * i, 2 * i + 1, f"How do I learn {i}?", f"What is {i}?", i % 2] for i in range(n)]
    write_tsv(root / "QQP" / "train.tsv", header, rows(n_train))
    write_tsv(root / "QQP" / "dev.tsv", header, rows(n_dev))
    return root


def write_mnli(root: Path) -> Path:
    def rows(n, extra):
        return [[i, i, f"{i}e", "fiction", "( a )", "( b )", "(ROOT a)", "(ROOT b)",
                 f"The cat sat {i}.", f"A cat {i}.", *([MNLI_LABELS[i % 3]] * extra), MNLI_LABELS[i % 3]]
                for i in range(n)]
    write_tsv(root / "MNLI" / "train.tsv", MNLI_TRAIN_HEADER, rows(6, 1))
    write_tsv(root / "MNLI" / "dev_matched.tsv", MNLI_DEV_HEADER, rows(5, 5))
    write_tsv(root / "MNLI" / "dev_mismatched.tsv", MNLI_DEV_HEADER, rows(4, 5))
    return root


def multirc_passages() -> list[dict]:
    answers = lambda labels: [{"text": f"Answer {j}.", "idx": j, "label": lab} for j, lab in enumerate(labels)]
    return [
        {"idx": 0, "version": 1.1, "passage": {
            "text": "<b>Sent 1: </b>Alice went home.<br><b>Sent 2: </b>She slept.<br>",
            "questions": [{"question": "Who went <b>home</b>?", "idx": 0, "answers": answers([1, 0, 1])},
                          {"question": "What did she do?", "idx": 1, "answers": answers([0, 1])}]}},
        {"idx": 1, "version": 1.1, "passage": {
            "text": "<b>Sent 1: </b>Bob ran.<br>",
            "questions": [{"question": "Who ran?", "idx": 0, "answers": answers([1, 0])}]}},
    ]


def wic_rows() -> list[dict]:
    return [{"word": "bank", "sentence1": "He sat on the river bank.", "sentence2": "The bank closed.",
             "idx": 0, "label": False, "start1": 18, "start2": 4, "end1": 22, "end2": 8, "version": 1.1},
            {"word": "run", "sentence1": "I run daily.", "sentence2": "They run fast.",
             "idx": 1, "label": True, "start1": 2, "start2": 5, "end1": 5, "end2": 8, "version": 1.1}]


def write_superglue_extra(root: Path) -> Path:
    write_jsonl(root / "MultiRC" / "train.jsonl", multirc_passages())
    write_jsonl(root / "MultiRC" / "val.jsonl", multirc_passages())
    write_jsonl(root / "WiC" / "train.jsonl", wic_rows())
    write_jsonl(root / "WiC" / "val.jsonl", wic_rows())
    return root


def mrqa_contexts(subset: str) -> list[dict]:
    return [{"id": f"{subset}-c0", "context": "Paris is the capital of France.", "qas": [
                {"qid": "q0", "question": "What is the capital of France?", "answers": ["Paris", "paris"],
                 "detected_answers": [{"text": "Paris", "char_spans": [[0, 4]], "token_spans": [[0, 0]]}]},
                {"qid": "q1", "question": "Paris is the capital of which country?", "answers": ["France"],
                 "detected_answers": []}]},
            {"id": f"{subset}-c1", "context": "The U.S. flag has 50 stars.", "qas": [
                {"qid": "q2", "question": "How many stars?", "answers": ["50"], "detected_answers": []}]}]


def write_mrqa(root: Path, subset: str = "NewsQA") -> Path:
    for split in ("train", "dev"):
        header = {"header": {"dataset": subset, "split": split}}
        write_jsonl(root / "mrqa" / split / f"{subset}.jsonl.gz", [header] + mrqa_contexts(subset), gz=True)
    return root


def squad_json() -> dict:
    return {"version": "1.1", "data": [{"title": "France", "paragraphs": [
        {"context": "Paris is the capital of France.", "qas": [
            {"id": "a1", "question": "What is the capital of France?",
             "answers": [{"answer_start": 0, "text": "Paris"}, {"answer_start": 0, "text": "Paris"}]}]}]}]}


def write_squad(root: Path) -> Path:
    (root / "squad").mkdir(parents=True)
    for name in ("train-v1.1.json", "dev-v1.1.json"):
        (root / "squad" / name).write_text(json.dumps(squad_json()), encoding="utf-8")
    return root


def winogrande_rows() -> list[dict]:
    return [{"qID": "a-1", "sentence": "Sarah was a better surgeon than Maria so _ got the hard cases.",
             "option1": "Sarah", "option2": "Maria", "answer": "1"},
            {"qID": "b-1", "sentence": "The cup fell off the table because _ was tilted.",
             "option1": "cup", "option2": "table", "answer": "2"}]


def write_winogrande(root: Path) -> Path:
    write_jsonl(root / "winogrande_1.1" / "train_xl.jsonl", winogrande_rows())
    write_jsonl(root / "winogrande_1.1" / "dev.jsonl", winogrande_rows())
    return root


YELP_CSV = ('"1","The food was cold and the ""service"" slow.\\nNever again."\n'
            '"2","Lovely staff, great coffee."\n')


def write_yelp(root: Path) -> Path:
    (root / "yelp_review_polarity_csv").mkdir(parents=True)
    for name in ("train.csv", "test.csv"):
        (root / "yelp_review_polarity_csv" / name).write_text(YELP_CSV, encoding="utf-8")
    return root


SCITAIL_ROWS = [["Plants make food by photosynthesis.", "Photosynthesis makes food.", "entails"],
                ["The sun is a star.", "Mars is red.", "neutral"]]


def write_scitail(root: Path) -> Path:
    for split in ("train", "dev", "test"):
        write_tsv(root / "SciTailV1.1" / "tsv_format" / f"scitail_1.0_{split}.tsv", None, SCITAIL_ROWS)
    return root


PAWS_ROWS = [[1, "In 1964 he moved to Paris.", "He moved to Paris in 1964.", 1],
             [2, "Paris moved to him in 1964.", "He moved to Paris in 1964.", 0]]


def write_paws(root: Path) -> Path:
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        write_tsv(root / "final" / name, ["id", "sentence1", "sentence2", "label"], PAWS_ROWS)
    return root


# ---- the tests ----------------------------------------------------------------------


def test_qqp_and_holdout_sizes(tmp_path):
    write_qqp(tmp_path, n_train=1010, n_dev=7)
    train = load_task("qqp", "train", tmp_path)
    assert len(train) == 10 and len(load_task("qqp", "validation", tmp_path)) == 1000
    assert len(load_task("qqp", "test", tmp_path)) == 7  # the official dev set
    first = load_task("qqp", "train", tmp_path, protocol="official")[0]
    assert first.source == "question1: How do I learn 0? question2: What is 0?"
    assert (first.target, first.label) == ("not_duplicate", 0)


def test_mnli_files_and_protocols(tmp_path):
    write_mnli(tmp_path)
    assert find_tasks(tmp_path) == {"mnli": {"train": 6, "validation_matched": 5, "validation_mismatched": 4}}
    assert len(load_task("mnli", "validation", tmp_path)) == 4  # paper: mismatched
    assert len(load_task("mnli", "test", tmp_path)) == 5  # paper: matched
    assert len(load_task("mnli", "validation", tmp_path, protocol="official")) == 5  # matched
    ex = load_task("mnli", "validation_mismatched", tmp_path, protocol="official")[2]
    assert ex.source == "premise: The cat sat 2. hypothesis: A cat 2."
    assert (ex.target, ex.label) == ("contradiction", 2)


def test_multirc_one_example_per_answer_grouped_by_question(tmp_path):
    write_superglue_extra(tmp_path)
    examples = load_task("multirc", "train", tmp_path)
    assert len(examples) == 7
    assert examples[0].source == ("question: Who went home? answer: Answer 0. "
                                  "paragraph: Sent 1: Alice went home. Sent 2: She slept.")
    assert [e.group for e in examples] == ["0-0"] * 3 + ["0-1"] * 2 + ["1-0"] * 2
    assert [e.target for e in examples[:3]] == ["true", "false", "true"]
    # The paper's halving never splits a question's answer options.
    val, test = (load_task("multirc", s, tmp_path) for s in ("validation", "test"))
    assert len(val) + len(test) == 7 and not {e.group for e in val} & {e.group for e in test}


def test_wic(tmp_path):
    write_superglue_extra(tmp_path)
    ex = load_task("wic", "train", tmp_path, protocol="official", target_words="index")
    assert ex[0].source == "sentence1: He sat on the river bank. sentence2: The bank closed. word: bank"
    assert [(e.target, e.label) for e in ex] == [("0", 0), ("1", 1)]


def test_mrqa_one_example_per_question_with_padded_punctuation(tmp_path):
    write_mrqa(tmp_path)
    ex = load_task("newsqa", "validation", tmp_path / "mrqa", protocol="official")
    assert len(ex) == 3
    assert ex[0].source == "question: What is the capital of France ? context: Paris is the capital of France ."
    assert (ex[0].target, ex[0].answers) == ("Paris", ("Paris", "paris"))
    assert ex[2].target == "50" and "The U . S . flag" in ex[2].source
    assert find_tasks(tmp_path) == {"newsqa": {"train": 3, "validation": 3}}


def test_squad_v11_json(tmp_path):
    write_squad(tmp_path)
    ex = load_task("squad", "validation", tmp_path, protocol="official")
    assert ex == load_task("squad", "test", tmp_path)  # paper: test = official dev
    assert ex[0].source == "question: What is the capital of France ? context: Paris is the capital of France ."
    assert ex[0].answers == ("Paris", "Paris")


def test_winogrande(tmp_path):
    write_winogrande(tmp_path)
    ex = load_task("winogrande", "train", tmp_path, protocol="official")
    assert ex[0].source == ("sentence: Sarah was a better surgeon than Maria so _ got the hard cases. "
                            "option0: Sarah option1: Maria")
    assert [(e.target, e.label) for e in ex] == [("option0", 0), ("option1", 1)]


def test_yelp_csv_quotes_and_labels(tmp_path):
    write_yelp(tmp_path)
    ex = load_task("yelp_polarity", "test", tmp_path)  # paper: test = official test
    assert ex[0].source == 'sentence: The food was cold and the "service" slow.\\nNever again.'
    assert [(e.target, e.label) for e in ex] == [("negative", 0), ("positive", 1)]
    with pytest.raises(ValueError, match="no official split 'validation'"):
        load_task("yelp_polarity", "validation", tmp_path, protocol="official")


def test_scitail_and_paws(tmp_path):
    write_scitail(tmp_path)
    write_paws(tmp_path)
    sci = load_task("scitail", "test", tmp_path, protocol="official")  # SciTail's test is labelled
    assert sci[0].source == "premise: Plants make food by photosynthesis. hypothesis: Photosynthesis makes food."
    assert [e.target for e in sci] == ["entailment", "neutral"]
    paws = load_task("paws-wiki", "test", tmp_path)  # paper protocol = official for PAWS
    assert paws[0].source == "sentence1: In 1964 he moved to Paris. sentence2: He moved to Paris in 1964."
    assert [e.target for e in paws] == ["paraphrase", "not_paraphrase"]
    assert find_tasks(tmp_path) == {"scitail": {"train": 2, "validation": 2, "test": 2},
                                    "paws": {"train": 2, "validation": 2, "test": 2}}


def test_task_folder_itself_and_suite_root(tmp_path):
    write_qqp(tmp_path / "glue")
    assert len(load_task("qqp", "validation", tmp_path / "glue" / "QQP", protocol="official")) == 4
    assert len(load_task("qqp", "validation", tmp_path, protocol="official")) == 4  # holds glue/
    assert find_tasks(tmp_path / "glue" / "QQP") == {"qqp": {"train": 6, "validation": 4}}
