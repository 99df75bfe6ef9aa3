"""POST /v1/completions: OpenAI's completions over the engine's decode rows, whole or streamed."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid

import torch
from fastapi import Depends, Request
from fastapi.responses import StreamingResponse

from .adapters import RequestError, Served
from ..decoding import Row
from .work import ShuttingDown
from .schemas import CompletionRequest, error_body
from .service import Service, service
from .shutdown import SHUTTING_DOWN


async def completions(body: CompletionRequest, request: Request, svc: Service = Depends(service)):
    adapter = svc.adapter(body.model, request)
    prompt_ids, truncated = _checked_prompts(body, adapter, svc)
    stream = asyncio.Queue() if body.stream else None
    work = svc.engine.generate(_rows(body, adapter, prompt_ids, stream))
    reply = _Reply(body, sum(len(i) for i in prompt_ids))
    if stream is None:
        return {**reply.whole(await svc.answer(work, request)), "dept": {"truncated": truncated}}
    future = asyncio.wrap_future(svc.engine.submit(work))
    return StreamingResponse(reply.events(work, future, stream), media_type="text/event-stream")


def _checked_prompts(body: CompletionRequest, adapter: Served | None, svc: Service):
    """(token ids of each prompt, whether each was truncated), or the request's refusal."""
    unsupported = body.unsupported()
    if unsupported:
        raise RequestError(f"{unsupported}: not supported by dept serve; leave it out", param=unsupported)
    family = svc.engine.family
    if not family.generates:
        raise RequestError(f"a {family.name} model classifies; use /v1/classify", param="model")
    if body.max_tokens > svc.limits.max_tokens:
        raise RequestError(f"max_tokens {body.max_tokens} is over this server's cap of {svc.limits.max_tokens}",
                           param="max_tokens")
    prompts = body.prompts()
    if not prompts or len(prompts) > svc.limits.max_inputs:
        raise RequestError(f"'prompt' must hold 1 to {svc.limits.max_inputs} strings", param="prompt")
    truncated = [adapter.check_length(p, f"prompt[{i}]") if adapter else False for i, p in enumerate(prompts)]
    tokenizer = svc.engine.tokenizer
    ids = [adapter.collator.source_ids(p) if adapter else tokenizer(p)["input_ids"] for p in prompts]
    if any(not i for i in ids):
        raise RequestError("an empty prompt", param="prompt")
    return ids, truncated


def _rows(body: CompletionRequest, adapter: Served | None, prompt_ids, stream) -> list[Row]:
    """One decode row per prompt, each with its own seeded generator and streaming callback."""
    loop = asyncio.get_running_loop()
    rows = []
    for index, source_ids in enumerate(prompt_ids):
        generator = seed = None
        if body.temperature > 0:
            # torch takes seeds in [-2^63, 2^64): wrap the per-prompt offset around that range
            seed = body.seed + index if body.seed is not None else secrets.randbits(62)
            seed = (seed + 2**63) % 2**64 - 2**63
            generator = torch.Generator().manual_seed(seed)
        on_text = (lambda piece, index=index: loop.call_soon_threadsafe(stream.put_nowait, (index, piece))) \
            if stream is not None else None
        rows.append(Row(source_ids, adapter.ref if adapter else None, body.max_tokens, body.temperature,
                        body.top_p, stops=body.stops(), generator=generator, seed=seed, on_text=on_text))
    return rows


class _Reply:
    """OpenAI's response shapes for one request: the whole answer, or its server-sent events."""

    def __init__(self, body: CompletionRequest, prompt_tokens: int):
        self.model, self.prompt_tokens = body.model, prompt_tokens
        self.id, self.created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

    def whole(self, rows: list[Row]) -> dict:
        completion = sum(len(r.tokens) for r in rows)
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [{"index": i, "text": r.text, "logprobs": None, "finish_reason": r.finish_reason}
                            for i, r in enumerate(rows)],
                "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                          "total_tokens": self.prompt_tokens + completion}}

    def chunk(self, index: int, text: str, finish) -> str:
        return "data: " + json.dumps({"id": self.id, "object": "text_completion", "created": self.created,
                                      "model": self.model, "choices": [{"index": index, "text": text,
                                                                        "logprobs": None, "finish_reason": finish}]}
                                     ) + "\n\n"

    async def events(self, work, future, stream: asyncio.Queue):
        try:
            while not (future.done() and stream.empty()):
                try:
                    index, piece = await asyncio.wait_for(stream.get(), timeout=0.1)
                except asyncio.TimeoutError:
                    continue
                yield self.chunk(index, piece, None)
            try:
                rows = await future
            except (RequestError, ShuttingDown) as err:  # the status line has gone: say it in the stream
                message = str(err) or SHUTTING_DOWN
                yield "data: " + json.dumps(error_body(message, "server_error")) + "\n\n"
            else:
                for index, row in enumerate(rows):
                    yield self.chunk(index, "", row.finish_reason)
            yield "data: [DONE]\n\n"
        finally:
            work.future.cancel()  # a client that left: its rows leave the batch
