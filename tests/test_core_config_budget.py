"""DeptConfig validation and scale, the budget rule l·d = m·d + (s + d)·r, and `dept budget`."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import pytest
from helpers_tiny import D, dept_config, tiny_base
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)

from dept.adapter import DeptAdapter
from dept.budget import BudgetError, solve_budget
from dept.cli.main import main
from dept.config import ConfigError, DeptConfig
from dept.model import DeptModel


# ----- DeptConfig -------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, field", [
    ({"prompt_length": -1}, "prompt_length"),
    ({"rank": -2}, "rank"),
    ({"max_length": -5}, "max_length"),
    ({"max_length": 0, "rank": 0}, "max_length"),
    ({"prompt_length": 0, "rank": 0}, "prompt_length"),
    ({"rank": 20, "max_length": 10}, "rank"),
    ({"rank": 2.5}, "rank"),
    ({"prompt_length": True}, "prompt_length"),
    ({"alpha": 0}, "alpha"),
    ({"alpha": float("nan")}, "alpha"),
    ({"scaling": "log"}, "scaling"),
    ({"prompt_init": "zeros"}, "prompt_init"),
    ({"on_overflow": "wrap"}, "on_overflow"),
    ({"head_pooling": "max"}, "head_pooling"),
    ({"num_labels": 0}, "num_labels"),
    ({"init_text": "  "}, "init_text"),
    ({"init_text": 7, "prompt_init": "vocab"}, "init_text"),
    ({"seed": "1"}, "seed"),
    ({"task": "sst2"}, "task"),
])
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=rf"DeptConfig\.{field}:"):
        DeptConfig(**kwargs)


def test_rank_above_hidden_size_refused_when_attached():
    config = DeptConfig(prompt_length=2, rank=D + 1, max_length=64, prompt_init="random")  # fine alone
    with pytest.raises(ConfigError, match=r"DeptConfig\.rank: .*hidden size 32"):
        config.validate(hidden_size=D)
    with pytest.raises(ConfigError, match="rank"):
        DeptAdapter(config, D)
    model = DeptModel(tiny_base("causal"))
    with pytest.raises(ConfigError, match="rank"):
        model.add_adapter("big", config)
    assert model.adapter_names == []
    model.add_adapter("ok", DeptConfig(prompt_length=2, rank=D, max_length=64, prompt_init="random"))


def test_valid_edge_configs():
    assert DeptConfig(prompt_length=0, rank=1, max_length=1).rank == 1  # no prompt at all
    pt = DeptConfig(prompt_length=5, rank=0)
    assert pt.is_prompt_tuning and pt.scale == 0.0
    assert DeptConfig(rank=8, max_length=8).rank == 8


@pytest.mark.parametrize("alpha, rank", [(8.0, 30), (16.0, 4), (1.0, 1)])
def test_scale_values(alpha, rank):
    assert DeptConfig(alpha=alpha, rank=rank, scaling="sqrt").scale == pytest.approx(alpha / math.sqrt(rank))
    assert DeptConfig(alpha=alpha, rank=rank, scaling="linear").scale == pytest.approx(alpha / rank)


def test_default_scale_is_the_reference_codes():
    assert DeptConfig().scale == pytest.approx(8 / math.sqrt(30))


def test_from_dict_refuses_unknown_fields_and_round_trips():
    config = DeptConfig(prompt_length=4, rank=2, max_length=8, task={"name": "sst2"})
    assert DeptConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"my\.json: unknown DeptConfig field\(s\) \['dropout'\]"):
        DeptConfig.from_dict({**config.to_dict(), "dropout": 0.1}, source="my.json")


def test_encoder_needs_num_labels_and_others_refuse_it():
    with pytest.raises(ValueError, match="num_labels"):
        DeptModel(tiny_base("encoder"), dept_config("causal"))
    with pytest.raises(ValueError, match="num_labels is for encoder"):
        DeptModel(tiny_base("causal"), dept_config("encoder"))


# ----- solve_budget -----------------------------------------------------------------------------
def test_budget_papers_example():
    b = solve_budget(vanilla_length=100, max_length=256, hidden_size=768, rank=30)
    assert (b.prompt_length, b.rank) == (60, 30)
    assert b.trainable_params == b.vanilla_params == 76800 and b.exact
    assert b.trainable_params == DeptConfig(prompt_length=60, rank=30, max_length=256).trainable_params(768)


def test_budget_solves_rank_for_prompt_length():
    b = solve_budget(100, 256, 768, prompt_length=60)
    assert (b.prompt_length, b.rank, b.exact) == (60, 30, True)
    pt = solve_budget(100, 256, 768, rank=0)
    assert (pt.prompt_length, pt.exact) == (100, True)
    top = solve_budget(100, 256, 768, prompt_length=0)  # all of the budget in the pair
    assert top.rank == 75 and top.trainable_params == 75 * 1024 == top.vanilla_params


def test_a_prompt_multiple_rounds_m_down_then_solves_r():
    b = solve_budget(100, 256, 768, prompt_length=60, prompt_multiple=16)  # 48 vectors: 3 whole blocks
    assert (b.prompt_length, b.rank) == (48, 39) and b.trainable_params <= b.vanilla_params
    assert b.trainable_params == 48 * 768 + (256 + 768) * 39
    given_rank = solve_budget(100, 256, 768, rank=30, prompt_multiple=16)  # m=60 would fit: 48 does
    assert (given_rank.prompt_length, given_rank.rank, given_rank.exact) == (48, 30, False)
    assert solve_budget(100, 256, 768, rank=30, prompt_multiple=1).prompt_length == 60


def test_cli_budget_prompt_multiple(capsys):
    assert main(["budget", "-l", "100", "-s", "256", "-d", "768", "-m", "60", "--block_size", "16", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["prompt_length"], record["rank"]) == (48, 39)


def test_train_options_round_m_to_the_multiple():
    from dept.training.methods import dept_config
    from dept.training.options import TrainOptions

    config = dept_config(TrainOptions(prompt_length=60, prompt_multiple=16, vanilla_length=100, max_length=256),
                         768, None, {})
    assert (config.prompt_length, config.rank) == (48, 39)
    pt = dept_config(TrainOptions(method="pt", vanilla_length=100, block_size=16), 768, None, {})
    assert (pt.prompt_length, pt.rank) == (96, 0)


@pytest.mark.parametrize("kwargs", [{"rank": 7}, {"prompt_length": 61}, {"rank": 1}, {"prompt_length": 3}])
def test_inexact_budgets_stay_under(kwargs):
    b = solve_budget(100, 256, 768, **kwargs)
    assert not b.exact
    assert b.trainable_params < b.vanilla_params
    assert b.trainable_params == b.prompt_length * 768 + (256 + 768) * b.rank
    # ... and it is the closest: one more prompt row (or one more rank) would exceed the budget.
    if "rank" in kwargs:
        assert b.trainable_params + 768 > b.vanilla_params
    else:
        assert b.trainable_params + 1024 > b.vanilla_params


@pytest.mark.parametrize("args, kwargs, message", [
    ((100, 256, 768), {"rank": 76}, "largest rank within budget is 75"),
    ((100, 256, 768), {"rank": -1}, "rank must be >= 0"),
    ((100, 256, 768), {"prompt_length": 101}, "prompt_length must be in"),
    ((100, 256, 768), {}, "exactly one"),
    ((100, 256, 768), {"rank": 1, "prompt_length": 1}, "exactly one"),
    ((0, 256, 768), {"rank": 1}, "vanilla_length"),
    ((100, 0, 768), {"rank": 1}, "max_length"),
    ((100, 256, -1), {"rank": 1}, "hidden_size"),
    ((100, 8, 32), {"prompt_length": 0}, "exceeds min"),
    ((100, 8, 32), {"rank": 9}, "exceeds min"),
    ((1, 256, 32), {"prompt_length": 0}, "nothing would train"),
])
def test_budget_errors(args, kwargs, message):
    with pytest.raises(BudgetError, match=message):
        solve_budget(*args, **kwargs)


# ----- `dept budget` ------------------------------------------------------------------------------
PAPER_ARGS = ["budget", "--vanilla-length", "100", "--max-length", "256", "--hidden-size", "768",
              "--rank", "30", "--json"]
PAPER_RESULT = {"prompt_length": 60, "rank": 30, "trainable_params": 76800, "vanilla_params": 76800}


def test_cli_budget_script():
    script = shutil.which("dept")
    command = [script] if script else [sys.executable, "-m", "dept.cli.main"]
    done = subprocess.run(command + PAPER_ARGS, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]).items() >= PAPER_RESULT.items()


def test_cli_budget_in_process(capsys):
    assert main(PAPER_ARGS) == 0
    out = capsys.readouterr()
    record = json.loads(out.out)
    assert record.items() >= PAPER_RESULT.items() and record["exact"] is True
    assert out.err == ""


def test_cli_budget_text_and_inexact(capsys):
    assert main(["budget", "-l", "100", "-s", "256", "-d", "768", "-m", "61"]) == 0
    out = capsys.readouterr()
    assert "m = 61, rank r = 29" in out.out
    assert "closest under budget" in out.err


def test_cli_budget_error_exit_code(capsys):
    assert main(["budget", "-l", "100", "-s", "256", "-d", "768", "-r", "500"]) == 2
    assert "largest rank within budget is 75" in capsys.readouterr().err


def test_cli_budget_reads_hidden_size_from_a_model_folder(tmp_path, capsys):
    tiny_base("causal").config.save_pretrained(tmp_path)
    assert main(["budget", "-l", "10", "-s", "64", "--model", str(tmp_path), "-r", "2", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["hidden_size"], record["prompt_length"], record["exact"]) == (D, 4, True)


def test_family_detection():
    from transformers import GPT2Config

    from dept.families import get_family

    for family in ("seq2seq", "causal", "encoder"):  # T5, Llama, BERT
        assert get_family(tiny_base(family).config).name == family
    assert get_family(GPT2Config()).name == "causal"
    assert get_family("encoder").prompt_offset == 1 and get_family("causal").labels_in_input
    with pytest.raises(ValueError, match="unknown model family 'rnn'"):
        get_family("rnn")
