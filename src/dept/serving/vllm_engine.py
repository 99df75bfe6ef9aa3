"""vLLM as the serving engine (`dept serve --engine vllm`), for decoder-only models.

vLLM's async engine runs on an event loop of its own thread, inside the server process; the
routes reach it only through `ServingEngine` (interface.py), as they reach the embedded engine,
so routes, auth, limits, metrics, hot loading and the drain are the same. Clients never send
embeddings and the engine is not exposed: dept lays out each row as its adapter sees it,
[P_s ; W(x) + scale·A·B] (`vllm_engine.prompt_embeddings`, every tensor checked), and hands it
to vLLM as `prompt_embeds`; rows for the base model alone go as token ids. vLLM schedules them
(continuous batching, paged attention, prefix caching by full blocks).

vLLM's tokens come back one by one and pass through the embedded engine's own
`decoding.advance`, so text, stop strings, streaming and finish reasons are decided in one
place; a row that a stop string ends is aborted in vLLM. Classification ranks the label words
as `vllm_engine.rank_requests` scores them (the embedded engine's scores). New work is refused
while the work in flight is expected to take longer than `max_queue_wait` (admission.py), at
the rates measured between completions, since vLLM runs all the work in flight at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from concurrent.futures import Future

from ..decoding import Row, advance, eos_ids
from ..trained import TrainedAdapter, read_trained
from ..vllm_engine import (EngineError, check_family, prompt_embeddings, rank_requests, token_embedder, vllm_settings,
                           word_scores)
from .adapters import AdapterTable, RequestError, Served
from .admission import WaitEstimate
from .policy import Kind
from .work import QueueFull, ShuttingDown, Work, fail, finish_row

log = logging.getLogger("dept")


class VllmServingEngine(AdapterTable):
    def __init__(self, model, base_folder: str, options: dict, *, max_queue: int = 256, max_queue_wait: float = 0.0,
                 metrics=None):
        check_family(model)
        settings, self.dtype = vllm_settings(options)
        from vllm import AsyncEngineArgs, AsyncLLMEngine, SamplingParams

        super().__init__(model)
        self.sampling = SamplingParams
        self.max_queue = max_queue
        self.admission = WaitEstimate(max_queue_wait)
        self.metrics = metrics
        self._eos = eos_ids(model)
        self._embed_tokens = token_embedder(model, self.dtype)
        self._lock = threading.Lock()        # the model's adapters: loaded, removed, laid out
        self._flight = threading.Lock()      # _works
        self._works: dict[int, tuple[Work, Future]] = {}  # id -> in flight: admitted, not yet answered
        self._closed = False
        self._shedding = False
        self._last_done: dict[Kind, float] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dept-vllm", daemon=True)
        self._thread.start()

        async def started():
            return AsyncLLMEngine.from_engine_args(AsyncEngineArgs(model=base_folder, **settings))
        try:
            self.llm = asyncio.run_coroutine_threadsafe(started(), self._loop).result()
        except Exception as err:  # an option vLLM does not have, or one it cannot start with
            self._loop.call_soon_threadsafe(self._loop.stop)
            if isinstance(err, TypeError):
                raise EngineError(f"--engine_args: {err}") from None
            raise EngineError(f"vLLM did not start ({type(err).__name__}: {err}); its log above says why") from None
        self._warm_up()

    def _warm_up(self) -> None:
        """Short requests of each kind (token ids, embeddings, a restricted one-token request with
        its log-probability) before serving. Without them the first classification took 2-3 s
        instead of 0.05-0.08 s on a tiny model, and the admission estimate took that for the
        service time and refused work that would not have waited (a 429 under light traffic)."""
        token = self.tokenizer.eos_token_id or 0
        plain = self.sampling(temperature=0, max_tokens=2)
        ranking = self.sampling(temperature=0, max_tokens=1, allowed_token_ids=[token], logprobs=0)  # as rank_requests

        async def warmed():
            for prompt, params in (({"prompt_token_ids": [token] * 4}, plain),
                                   ({"prompt_embeds": self._embed_tokens([token] * 4)}, plain),
                                   ({"prompt_embeds": self._embed_tokens([token] * 4)}, ranking)):
                async for _ in self.llm.generate(prompt, params, uuid.uuid4().hex):
                    pass
        asyncio.run_coroutine_threadsafe(warmed(), self._loop).result()

    # ----- life cycle --------------------------------------------------------------------------
    def start(self) -> "VllmServingEngine":
        return self  # vLLM was started with the engine, so that a bad option fails before serving

    def stop(self, timeout: float = 30.0) -> None:
        """Let the work in flight finish (up to `timeout`), then stop vLLM and its processes."""
        deadline = time.monotonic() + timeout
        while self._works and time.monotonic() < deadline:
            time.sleep(0.05)

        async def stopped():
            self.llm.shutdown()
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(stopped(), self._loop).result(timeout)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def depth(self) -> int:
        return len(self._works)

    def idle(self) -> bool:
        return not self._works

    def close(self) -> None:
        self._closed = True

    def shed(self) -> None:
        self._closed = self._shedding = True
        for work, task in list(self._works.values()):
            fail(work, ShuttingDown())
            task.cancel()

    # ----- adapters -----------------------------------------------------------------------------
    def load_adapter(self, name: str, path: str | TrainedAdapter) -> Served:
        trained = path if isinstance(path, TrainedAdapter) else read_trained(path)
        with self._lock:
            return self._attach(name, trained)

    def delete_adapter(self, name: str) -> None:
        with self._lock:
            self._detach(name)

    # ----- requests ------------------------------------------------------------------------------
    def classify(self, served: Served, sources: list[str]) -> Work:
        from .work import ClassifyRow

        if not served.candidates:
            raise RequestError(f"adapter {served.name!r} has no label words to rank; use /v1/completions",
                               param="model")
        return Work(Kind.CLASSIFY, [ClassifyRow(served, served.collator.source_ids(s)) for s in sources])

    def generate(self, rows: list[Row]) -> Work:
        return Work(Kind.GENERATE, rows)

    def submit(self, work: Work) -> Future:
        if self._closed:
            raise ShuttingDown()
        in_flight = [w for w, _ in list(self._works.values())]
        if len(in_flight) >= self.max_queue:
            raise QueueFull()
        retry = self.admission.refusal(in_flight, work.kind)
        if retry is not None:
            raise QueueFull(retry)
        work.started = time.perf_counter()
        with self._flight:  # registered before _serve can end and unregister it
            task = asyncio.run_coroutine_threadsafe(self._serve(work), self._loop)
            self._works[id(work)] = (work, task)
        # a request whose client left or timed out (its future cancelled) leaves vLLM too
        work.future.add_done_callback(lambda future: task.cancel() if future.cancelled() else None)
        return work.future

    # ----- on vLLM's loop ------------------------------------------------------------------------
    async def _serve(self, work: Work) -> None:
        try:
            prompts = self._laid_out(work)
            if prompts is None:
                return
            if work.kind is Kind.CLASSIFY:
                await self._classify(work, prompts)
            else:
                await asyncio.gather(*(self._decode(work, i, row, prompt)
                                       for i, (row, prompt) in enumerate(zip(work.rows, prompts))))
            self._observe(work)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # this request's failure, never the engine's
            if self._closed:  # vLLM's processes stopping under a drain (a signal to the process group)
                fail(work, ShuttingDown())
                return
            log.error("request failed: %s", err, exc_info=not isinstance(err, RequestError))
            fail(work, err)
        finally:
            with self._flight:
                self._works.pop(id(work), None)

    def _laid_out(self, work: Work) -> list | None:
        """Each row's prompt for vLLM (embeddings, or token ids for the base model alone); None
        when the work was answered here instead: shed, or its adapter removed since admission."""
        with self._lock:
            removed = self._removed(work.adapter_refs())
            if self._shedding or removed:
                fail(work, ShuttingDown() if self._shedding else removed)
                return None
            adapted = [i for i, row in enumerate(work.rows) if row.adapter is not None]
            embeds = prompt_embeddings(self.model, [work.rows[i].source_ids for i in adapted],
                                       [work.rows[i].adapter.name for i in adapted], 16, self.dtype)
        prompts: list = [{"prompt_token_ids": list(row.source_ids)} for row in work.rows]
        for i, e in zip(adapted, embeds):
            prompts[i] = {"prompt_embeds": e}
        return prompts

    async def _decode(self, work: Work, index: int, row: Row, prompt: dict) -> None:
        """One row through vLLM, each new token through decoding.advance as the embedded engine's."""
        params = self.sampling(temperature=row.temperature, top_p=row.top_p, top_k=row.top_k, seed=row.seed,
                               max_tokens=row.max_tokens, min_tokens=row.min_tokens,
                               stop_token_ids=sorted(self._eos), detokenize=False)
        request_id, seen = uuid.uuid4().hex, 0
        async for output in self.llm.generate(prompt, params, request_id):
            tokens = output.outputs[0].token_ids
            for token in tokens[seen:]:
                if row.finish_reason is None:
                    advance(row, token, self.tokenizer, self._eos)
            seen = len(tokens)
            if row.finish_reason is not None and not output.finished:  # a stop string: leave vLLM
                await self.llm.abort(request_id)
                break
            if output.finished:
                row.finish_reason = row.finish_reason or output.outputs[0].finish_reason or "length"
        finish_row(work, index, row)

    async def _classify(self, work: Work, prompts: list[dict]) -> None:
        served = work.rows[0].served  # a classify request names one adapter
        labels = served.candidates
        targets = [served.collator.target_ids(c) for c in labels]
        embeds = [p["prompt_embeds"] for p in prompts]
        requests = rank_requests(embeds, targets, self._embed_tokens, self.sampling)

        async def answer(prompt, params):
            async for output in self.llm.generate(prompt, params, uuid.uuid4().hex):
                last = output
            return last
        outputs = await asyncio.gather(*(answer(q, p) for q, p, _ in requests))
        scores = word_scores(len(embeds), len(labels), [(where, o) for (_, _, where), o in zip(requests, outputs)])
        for index, row_scores in enumerate(scores.tolist()):
            best = max(range(len(labels)), key=lambda c: row_scores[c])
            finish_row(work, index, {"label": labels[best], "scores": dict(zip(labels, row_scores))})

    def _observe(self, work: Work) -> None:
        """Tell the admission estimate the service time: with all the work in flight at once, the
        seconds since the last completion of its kind (or since it started, if later)."""
        now = time.perf_counter()
        since = max(work.started, self._last_done.get(work.kind, 0.0))
        self._last_done[work.kind] = now
        done = sum(len(r.tokens) + 1 if work.kind is Kind.GENERATE else 1 for r in work.rows)
        self.admission.observe(work.kind, now - since, done)
        if self.metrics is not None:
            self.metrics.batch_rows.observe(len(work.rows))
