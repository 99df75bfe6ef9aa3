"""The efficiency numbers README.md and docs/benchmarks.md publish are the ones
benchmarks/headline.py computes from the committed results files: a drift fails here."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import headline  # noqa: E402


def test_the_published_headline_and_table_come_from_the_results_files():
    for path, named in headline.blocks().items():
        text = path.read_text()
        for name, body in named.items():
            assert headline.replaced(text, name, body, path) == text, (
                f"{path.name}: the generated {name!r} block is stale; run python benchmarks/headline.py")


def test_a_changed_number_is_caught():
    path = Path("doc.md")
    current = f"intro\n{headline.BEGIN.format('headline')}\n0.90× PT\n{headline.END.format('headline')}\nrest\n"
    assert headline.replaced(current, "headline", "0.90× PT", path) == current
    assert headline.replaced(current, "headline", "0.97× PT", path) != current


def test_the_headline_quotes_t5_and_the_decoder_apart():
    t5, decoders = headline.rows()
    assert {r["model"] for r in t5} == {"t5-small", "t5-base"} and {r["model"] for r in decoders} == {"smollm2-135m"}
    text = headline.headline()
    decoder_steps = [r["step_vs_pt"] for r in decoders if r["m"] in headline.HEADLINE_M]
    assert "shared prefix" in text and f"**{min(decoder_steps):.2f}" in text
