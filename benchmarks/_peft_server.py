"""The baseline a user would write for many prompt-tuning tasks with PEFT: PEFT prompt-tuning
adapters on one model, `set_adapter` per request, one request at a time (PEFT cannot mix prompt
adapters in a batch). Serves /v1/classify and /v1/completions in the shapes of `dept serve`, so
benchmarks/serving.py drives both the same way. Loopback only.

As fair as PEFT allows: classification runs the prompt and the source once through PEFT, with
the cache on, and scores each label word from a copy of that cache (as dept scores candidates
after one forward over their shared prefix), rather than one whole forward per label word.

    python benchmarks/_peft_server.py PORT ADAPTERS
"""

from __future__ import annotations

import asyncio
import copy
import sys
import threading

import torch
import uvicorn
from fastapi import FastAPI
from peft import PeftModel, PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from dept.pretrained import resolve


def build(count: int):
    path = resolve("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(path)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=20,
                                prompt_tuning_init=PromptTuningInit.RANDOM)
    model: PeftModel = get_peft_model(base, config, adapter_name="a00")
    for i in range(1, count):
        model.add_adapter(f"a{i:02d}", config)
    return model.eval(), tokenizer


def main() -> None:
    port, count = int(sys.argv[1]), int(sys.argv[2])
    model, tokenizer = build(count)
    lock = threading.Lock()  # one request at a time: set_adapter changes the whole model
    words = [tokenizer(" negative")["input_ids"] + [tokenizer.eos_token_id],
             tokenizer(" positive")["input_ids"] + [tokenizer.eos_token_id]]
    app = FastAPI()

    def classify(adapter: str, sentence: str) -> dict:
        source = tokenizer(f"sentence: {sentence}\nLabel:")["input_ids"]
        scores = []
        with lock, torch.no_grad():
            model.set_adapter(adapter)
            # One forward over [prompt; source] (PEFT prepends the prompt), keeping its keys/values.
            shared = model(input_ids=torch.tensor([source]), use_cache=True)
            first = torch.log_softmax(shared.logits[0, -1], -1)                  # (V,): each word's first token
            for target in words:  # the rest of each label word continues from a copy of the cache
                rest = model.get_base_model()(input_ids=torch.tensor([target[:-1]]), use_cache=True,
                                              past_key_values=copy.deepcopy(shared.past_key_values)).logits[0]
                later = torch.log_softmax(rest, -1).gather(1, torch.tensor(target[1:])[:, None]).sum()
                scores.append(float(first[target[0]] + later))
        return {"label": ["negative", "positive"][scores.index(max(scores))], "scores": scores}

    def complete(adapter: str, prompt: str, max_tokens: int) -> dict:
        ids = tokenizer(f"{prompt}\nLabel:", return_tensors="pt")
        with lock, torch.no_grad():
            model.set_adapter(adapter)
            out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False,
                                 pad_token_id=tokenizer.eos_token_id)
        new = out[0, ids["input_ids"].shape[1]:]
        return {"text": tokenizer.decode(new, skip_special_tokens=True), "tokens": int(new.numel())}

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.post("/v1/classify")
    async def classify_route(body: dict):
        answer = await asyncio.to_thread(classify, body["model"], body["input"]["sentence"])
        return {"data": [answer]}

    @app.post("/v1/completions")
    async def complete_route(body: dict):
        answer = await asyncio.to_thread(complete, body["model"], body["prompt"], body["max_tokens"])
        return {"choices": [{"text": answer["text"]}], "usage": {"completion_tokens": answer["tokens"]}}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
