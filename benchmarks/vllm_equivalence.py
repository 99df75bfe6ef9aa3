"""The vLLM engine's answers against the embedded engine's, on the real SmolLM2 in fp32: both
servers (`dept serve` and `dept serve --engine vllm`) on 127.0.0.1, the first 40 SST-2 dev
sentences (../shared/data), greedy completions (8 tokens) and /v1/classify labels, for a DePT
adapter, a PT adapter (r=0), and requests mixing 4 adapters, all in flight at once.

    python benchmarks/vllm_equivalence.py   # where vLLM is installed (make install-vllm); ~6 min
    python benchmarks/vllm_equivalence.py --dtype bfloat16 --tensor_parallel_size 2   # on GPUs

Targets (issue 25): the first 8 tokens agree for >= 95% of the sentences, labels for >= 98%.
Where they differ, the report gives the margins: for a completion, the smallest gap between the
embedded engine's two most likely next tokens over its 8 greedy steps (logits); for a label, the
gap between the two labels' log-likelihoods on each engine. Since labels can agree by both
engines leaning one way, the largest difference between the engines' label scores (summed
log-probabilities) is reported too. The adapters have random weights (the prompt from text, B
drawn with std 0.01): agreement does not depend on what they learned.
Writes benchmarks/results/vllm-equivalence.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
from collections import Counter
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import start  # noqa: E402  (the benchmark's server launcher)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "glue" / "SST-2" / "dev.tsv"
ADAPTERS = {"dept": dict(prompt_length=20, rank=8), "pt": dict(prompt_length=40, rank=0),
            "dept-b": dict(prompt_length=10, rank=16), "dept-c": dict(prompt_length=30, rank=4)}
CASES = {"DePT adapter": ["dept"], "PT adapter (r=0)": ["pt"], "4 adapters mixed": list(ADAPTERS)}
TOKENS = 8


def sentences(count: int = 40) -> list[str]:
    with DATA.open(newline="") as f:
        return [row["sentence"] for row in csv.DictReader(f, delimiter="\t")][:count]


def make_adapters(folder: Path) -> None:
    import torch

    from dept import DeptConfig, DeptModel

    model = DeptModel.from_pretrained("smollm2-135m")
    for seed, (name, shape) in enumerate(ADAPTERS.items()):
        torch.manual_seed(seed)
        model.add_adapter(name, DeptConfig(**shape, max_length=64, seed=seed, task={"task": "sst2"}))
        with torch.no_grad():
            if shape["rank"]:
                model.dept_adapters[name].lora_b.normal_(0, 0.01)
        model.save_adapter(folder / name, name)


async def answers(url: str, case: list[str], texts: list[str]) -> tuple[list[str], list[dict]]:
    """(completion texts, classify rows) for sentence i through adapter case[i % len(case)]."""
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        async def complete(i, text):
            r = await http.post("/v1/completions", json={"model": case[i % len(case)], "prompt": text,
                                                         "max_tokens": TOKENS, "temperature": 0})
            return r.json()["choices"][0]["text"]

        async def classify(i, text):
            r = await http.post("/v1/classify", json={"model": case[i % len(case)], "input": {"sentence": text}})
            return r.json()["data"][0]
        done = await asyncio.gather(*(complete(i, t) for i, t in enumerate(texts)))
        labelled = await asyncio.gather(*(classify(i, t) for i, t in enumerate(texts)))
    return list(done), list(labelled)


def smallest_margin(model, served, text: str) -> float:
    """The smallest top-1 minus top-2 logit over the embedded engine's greedy steps for `text`."""
    import torch

    ids = served.collator.source_ids(text)
    source = len(ids)
    margins = []
    with torch.no_grad():
        for _ in range(TOKENS):
            x = torch.tensor([ids], device=model.device)
            mask = torch.zeros_like(x)
            mask[0, :source] = 1  # the low-rank update is for the source alone, as in decoding
            logits = model(x, source_mask=mask, adapter_names=[served.name]).logits[0, -1]
            top = logits.topk(2).values
            margins.append(float(top[0] - top[1]))
            ids.append(int(logits.argmax()))
    return round(min(margins), 4)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--tensor_parallel_size", type=int, default=1, help="vLLM's, on as many GPUs")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for the results")
    args = parser.parse_args(argv)
    if not DATA.is_file():
        sys.exit(f"skipped: {DATA} is absent (the shared GLUE data, beside the project)")
    engine_args = {"max_model_len": 512, "dtype": args.dtype, "tensor_parallel_size": args.tensor_parallel_size}
    began = time.perf_counter()
    texts = sentences()
    got: dict[str, dict[str, tuple]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_adapters(folder)
        for engine, extra in {"embedded": [], "vllm": ["--engine", "vllm", "--engine_args",
                                                       json.dumps(engine_args)]}.items():
            # all 40 at once, none shed
            process, url = start(folder, ["--max_queue_wait", "0", "--dtype", args.dtype, *extra])
            try:
                got[engine] = {case: asyncio.run(answers(url, names, texts)) for case, names in CASES.items()}
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(120)
        results = compare(folder, texts, got, args.dtype)
    results.update(date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   wall_s=round(time.perf_counter() - began, 1), tensor_parallel_size=args.tensor_parallel_size)
    out = Path(args.out)
    suffix = "" if args.dtype == "float32" and args.tensor_parallel_size == 1 else f"-{args.dtype}-tp{args.tensor_parallel_size}"
    (out / f"vllm-equivalence{suffix}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"vllm-equivalence{suffix}.md").write_text(report(results))
    print(report(results))
    return results


def compare(folder: Path, texts: list[str], got: dict, dtype: str) -> dict:
    from dept import DeptModel
    from dept.serving.adapters import describe
    from dept.trained import read_trained

    import torch

    cuda = torch.cuda.is_available()
    model = DeptModel.from_pretrained("smollm2-135m", dtype=getattr(torch, dtype), device="cuda" if cuda else None).eval()
    served = {}
    for name in ADAPTERS:
        trained = read_trained(folder / name)
        model.load_adapter(trained, adapter_name=name)
        served[name] = describe(model, trained, name)
    cases = {}
    for case, names in CASES.items():
        (texts_e, labels_e), (texts_v, labels_v) = got["embedded"][case], got["vllm"][case]
        differ = []
        for i, text in enumerate(texts):
            adapter = names[i % len(names)]
            if texts_e[i] != texts_v[i]:
                differ.append({"kind": "completion", "sentence": i, "adapter": adapter, "embedded": texts_e[i],
                               "vllm": texts_v[i], "margin": smallest_margin(model, served[adapter], text)})
            if labels_e[i]["label"] != labels_v[i]["label"]:
                gap = {engine: round(abs(float(s) - float(t)), 4) for engine, (s, t) in
                       (("embedded", labels_e[i]["scores"].values()), ("vllm", labels_v[i]["scores"].values()))}
                differ.append({"kind": "label", "sentence": i, "adapter": adapter, "embedded": labels_e[i]["label"],
                               "vllm": labels_v[i]["label"], "margin": gap})
        agree = sum(a == b for a, b in zip(texts_e, texts_v)) / len(texts)
        labels = sum(a["label"] == b["label"] for a, b in zip(labels_e, labels_v)) / len(texts)
        cases[case] = {"sentences": len(texts), "distinct_completions": len(set(texts_e)),
                       "labels_embedded": dict(Counter(row["label"] for row in labels_e)),
                       # labels can agree by both leaning one way: the scores themselves are compared
                       "largest_score_difference": round(max(abs(a["scores"][k] - b["scores"][k])
                                                             for a, b in zip(labels_e, labels_v) for k in a["scores"]), 5),
                       "first_8_tokens_agree": round(agree, 3),
                       "labels_agree": round(labels, 3), "target_met": agree >= 0.95 and labels >= 0.98,
                       "differences": differ}
    where = torch.cuda.get_device_name() if cuda else "CPU"
    return {"model": f"SmolLM2-135M-Instruct, {dtype}, {where}", "cases": cases}


def report(results: dict) -> str:
    lines = ["# The vLLM engine against the embedded engine", "",
             f"{results['model']}, tensor parallel {results['tensor_parallel_size']}; {results['date']}; "
             f"wall {results['wall_s']} s; "
             "`python benchmarks/vllm_equivalence.py`. Targets: first 8 tokens >= 95%, labels >= 98%.", "",
             "| case | sentences | distinct completions | labels (embedded) | first 8 tokens agree | labels agree "
             "| largest label-score difference | targets |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for case, c in results["cases"].items():
        lines.append(f"| {case} | {c['sentences']} | {c['distinct_completions']} | {c['labels_embedded']} | "
                     f"{c['first_8_tokens_agree']:.0%} | {c['labels_agree']:.0%} | {c['largest_score_difference']:g} | "
                     f"{'met' if c['target_met'] else 'missed'} |")
    differ = [(case, d) for case, c in results["cases"].items() for d in c["differences"]]
    lines += ["", "## Where they differ", ""]
    if not differ:
        lines.append("Nowhere: every completion and every label is the same through both engines.")
    for case, d in differ:
        lines.append(f"- {case}, sentence {d['sentence']} ({d['adapter']}, {d['kind']}): embedded {d['embedded']!r}, "
                     f"vLLM {d['vllm']!r}; margin {d['margin']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
