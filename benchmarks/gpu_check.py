"""The CUDA paths in one short run, for a machine with a GPU and vLLM (`make install-vllm`):

1. a bf16 training step of a DePT adapter on SmolLM2 (loss finite, the adapter moved, step time);
2. the shared prefix in bf16: logits with the prompt's keys and values computed once per batch
   against the laid-out rows (largest difference);
3. the vLLM engine against the embedded engine in bf16, with tensor parallelism over every GPU
   present: benchmarks/vllm_equivalence.py (40 SST-2 sentences, DePT, PT and 4 mixed adapters);
4. serving throughput of both engines in bf16: benchmarks/serving.py --engines.

    python benchmarks/gpu_check.py --out DIR     # about 10 min on one GPU

Writes DIR/gpu-check.json and the two scripts' own results files into DIR. Refuses to run
without CUDA, in one line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def training_step(device: str = "cuda") -> dict:
    import torch

    from dept import DeptConfig, DeptModel

    model = DeptModel.from_pretrained("smollm2-135m", dtype=torch.bfloat16, device=device)
    model.add_adapter("a", DeptConfig(prompt_length=20, rank=8, max_length=64, seed=0))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.randint(10, 1000, (8, 48), device=device)
    labels = ids.clone()
    labels[:, :40] = -100  # the target is the last 8 tokens
    times = []
    for _ in range(3):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        loss = model(ids, labels=labels, adapter_names=["a"] * 8).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    moved = max(float((p.detach() - before[n]).abs().max()) for n, p in model.named_parameters() if p.requires_grad)
    loss = loss.detach()
    return {"loss": float(loss), "finite": bool(torch.isfinite(loss)), "largest_change": moved,
            "step_ms": round(min(times) * 1000, 1)}


def shared_prefix(device: str = "cuda") -> dict:
    import torch

    from dept import DeptConfig, DeptModel

    model = DeptModel.from_pretrained("smollm2-135m", dtype=torch.bfloat16, device=device).eval()
    model.add_adapter("a", DeptConfig(prompt_length=20, rank=8, max_length=64, seed=0))
    ids = torch.randint(10, 1000, (4, 32), device=device)
    with torch.no_grad():
        laid = model.prepare_inputs(ids, adapter_names=["a"] * 4, shared=False)
        laid.pop("row_adapters")
        full = model.base_model(**laid).logits[:, -32:]
        shared = model(ids, adapter_names=["a"] * 4).logits[:, -32:]
    return {"uses_shared_prefix": bool(model.uses_shared_prefix(["a"] * 4, 32)),
            "largest_logit_difference": float((full.float() - shared.float()).abs().max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the results")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here; this script checks the CUDA paths")
    import serving
    import vllm_equivalence

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gpus = torch.cuda.device_count()
    results = {"device": torch.cuda.get_device_name(), "gpus": gpus,
               "training_step_bf16": training_step(), "shared_prefix_bf16": shared_prefix()}
    print(json.dumps(results, indent=2), flush=True)
    equivalence = vllm_equivalence.main(["--dtype", "bfloat16", "--tensor_parallel_size", str(gpus), "--out", str(out)])
    results["equivalence_bf16"] = {case: {k: v for k, v in c.items() if k != "differences"}
                                   for case, c in equivalence["cases"].items()}
    bench = serving.main(["--engines", "--dtype", "bfloat16", "--tensor_parallel_size", str(gpus), "--out", str(out)])
    results["serving_bf16_ratios"] = bench["ratios"]
    (out / "gpu-check.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
