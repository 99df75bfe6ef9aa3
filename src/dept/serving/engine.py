"""The one worker that owns the model: a bounded queue, batches formed across adapters.

Requests are validated and tokenised in the caller's thread, so a bad one is refused before it
reaches a batch. The worker takes up to `max_batch_size` rows that arrive within
`max_batch_wait_ms` of the first, mixing adapters in one batch (the library's mixed-adapter
path), classification and generation apart. A batch that fails is retried row by row, so an
error in one request never fails the others, and never stops the worker. Adapters are added
and removed on the worker thread too, between batches, so requests in flight never see a
model that changes under them. Between two decoding steps, queued work runs or joins
(continuous batching, docs/serving.md); new work is refused while the queued work is expected
to take longer than `max_queue_wait` (admission.py).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future

import torch

from ..data import pad_id, pad_rows
from ..decoding import Row, advance, eos_ids, generate_rows
from ..layout import group_rows
from ..trained import TrainedAdapter, read_trained
from .adapters import AdapterTable, RequestError, Served
from .admission import WaitEstimate
from .policy import BatchPolicy, Kind
from .work import ClassifyRow, QueueFull, ShuttingDown, Work, fail, finish_row, raise_into

log = logging.getLogger("dept")


class Engine(AdapterTable):
    def __init__(self, model, *, max_batch_size: int = 16, max_batch_wait_ms: float = 5.0, max_queue: int = 256,
                 mix_adapters: bool = True, max_queue_wait: float = 0.0, continuous: bool = True, metrics=None):
        super().__init__(model)
        self.policy = BatchPolicy(max_batch_size, max_batch_wait_ms / 1000, mix_adapters)
        self.queue: queue.Queue[Work] = queue.Queue(maxsize=max_queue)
        self.admission = WaitEstimate(max_queue_wait)
        self.continuous = continuous   # admit queued work between decoding steps
        self._timed = 0.0              # seconds of every batch run so far (nested runs counted once)
        self.metrics = metrics
        self._held: list[Work] = []
        self._stop = threading.Event()
        self._closed = False           # drain: no new work is admitted
        self._shedding = threading.Event()  # drain's timeout: what is left is answered ShuttingDown
        self._busy = False             # the worker is running a batch
        self._decoding = 0             # rows in the running decode (continuous batching), else 0
        self._thread = threading.Thread(target=self._loop, name="dept-engine", daemon=True)
        self.pad_id = pad_id(model.tokenizer)

    # ----- life cycle --------------------------------------------------------------------
    def start(self) -> "Engine":
        if not self.running:
            self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then stop the worker."""
        self._stop.set()
        self._thread.join(timeout)

    def depth(self) -> int:
        return self.queue.qsize() + len(self._held)

    def idle(self) -> bool:
        """Nothing queued and nothing running."""
        return self.depth() == 0 and not self._busy

    def close(self) -> None:
        """Admit no new work (submit raises ShuttingDown); what is queued still runs."""
        self._closed = True

    def shed(self) -> None:
        """Answer everything queued or running with ShuttingDown instead of finishing it."""
        self._closed = True
        self._shedding.set()

    # ----- adapters (run on the worker thread) ---------------------------------------------
    def load_adapter(self, name: str, path: str | TrainedAdapter) -> Served:
        # files are read and checked here, not on the worker
        trained = path if isinstance(path, TrainedAdapter) else read_trained(path)

        return self._control(lambda: self._attach(name, trained))

    def delete_adapter(self, name: str) -> None:
        return self._control(lambda: self._detach(name))

    def _control(self, action):
        work = Work(Kind.CONTROL, [], action=action)
        if not self.running:  # before start(): nothing can be in flight
            return action()
        self.queue.put(work)
        return work.future.result()

    # ----- requests --------------------------------------------------------------------------
    def submit(self, work: Work) -> Future:
        if self._closed:
            raise ShuttingDown()
        # Between decoding steps a classification runs and a generation joins: each waits for
        # its own kind only (static batches and seq2seq models: for everything queued).
        apart = self.continuous and self.model.family.labels_in_input
        queued = self._queued()
        if apart and work.kind is Kind.GENERATE:
            queued = self._past_free_rows(queued)
        retry = self.admission.refusal(queued, work.kind if apart else None)
        if retry is not None:
            raise QueueFull(retry)
        try:
            self.queue.put_nowait(work)
        except queue.Full:
            raise QueueFull() from None
        return work.future

    def _queued(self) -> list[Work]:
        """A snapshot of the work waiting for the worker."""
        with self.queue.mutex:
            waiting = list(self.queue.queue)
        return list(self._held) + waiting

    def _past_free_rows(self, queued: list[Work]) -> list[Work]:
        """Continuous batching: the queued generations that fit the running decode's free rows
        join it at the next step and wait for nobody; only those past them wait."""
        free = self.policy.max_batch_size - self._decoding
        later = []
        for work in queued:
            if work.kind is Kind.GENERATE and len(work.rows) <= free:
                free -= len(work.rows)
            else:
                later.append(work)
        return later

    def classify(self, served: Served, sources: list[str]) -> Work:
        return Work(Kind.CLASSIFY, [ClassifyRow(served, served.collator.source_ids(s)) for s in sources])

    def generate(self, rows: list[Row]) -> Work:
        return Work(Kind.GENERATE, rows)

    # ----- the worker ----------------------------------------------------------------------
    def _loop(self) -> None:
        while not (self._stop.is_set() and self.queue.empty() and not self._held):
            batch = self._collect()
            if not batch:
                continue
            self._busy = True
            try:
                for kind in Kind:
                    # A request whose client left (or timed out) is dropped before it costs anything.
                    works = [w for w in batch if w.kind is kind and not w.future.cancelled()]
                    self._step(kind, works)
            finally:
                self._busy = False

    def _step(self, kind: Kind, works: list[Work]) -> None:
        try:
            if kind is not Kind.CONTROL:
                works = self._answerable(works)
            if works:
                self._run(kind, works)
        except Exception as err:  # nothing a request brings may stop the worker
            log.exception("the worker failed a batch")
            for work in works:
                fail(work, err)

    def _answerable(self, works: list[Work]) -> list[Work]:
        """The works still to run; the others are answered here: ShuttingDown once the drain sheds,
        404 when an adapter they were admitted for has been removed since."""
        keep = []
        for work in works:
            removed = self._removed(work.adapter_refs())
            if self._shedding.is_set():
                fail(work, ShuttingDown())
            elif removed:
                fail(work, removed)
            else:
                keep.append(work)
        return keep

    def _collect(self) -> list[Work]:
        """The next batch, as the policy forms it from held-over work and the queue."""
        batch, self._held = self.policy.form(self._held, self._take)
        return batch

    def _take(self, timeout: float) -> Work | None:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _run(self, kind: Kind, works: list[Work]) -> None:
        if kind is Kind.CONTROL:
            for work in works:
                try:
                    work.future.set_result(work.action())
                except Exception as err:  # reported to the caller, never kills the worker
                    work.future.set_exception(err)
            return
        if self.metrics is not None:
            self.metrics.batch_rows.observe(sum(len(w.rows) for w in works))
        try:
            self._timed_compute(kind, works)
        except Exception:
            if len(works) == 1 and len(works[0].rows) == 1:
                raise_into(works[0])
                return
            for work in works:  # one bad request must not fail its batch-mates
                if work.future.done():
                    continue
                work.remaining, work.done = len(work.rows), [None] * len(work.rows)
                for row in work.rows:
                    if isinstance(row, Row):
                        row.tokens, row.text, row.finish_reason = [], "", None
                try:
                    self._compute(kind, [work])
                except Exception:
                    raise_into(work)

    def _timed_compute(self, kind: Kind, works: list[Work]) -> None:
        """_compute, its service time told to the admission estimate. Classifications run
        between decode steps are timed on their own and taken out of the generation's time."""
        started, nested = time.perf_counter(), self._timed
        self._compute(kind, works)
        total = time.perf_counter() - started
        self.admission.observe(kind, total - (self._timed - nested),
                               sum(len(r.tokens) + 1 if kind is Kind.GENERATE else 1 for w in works for r in w.rows))
        self._timed = nested + total

    def _compute(self, kind: Kind, works: list[Work]) -> None:
        if kind is Kind.CLASSIFY:
            self._classify(works)
        else:
            self._generate(works)
        for work in works:  # rows the drain's timeout took out of the batch
            if self._shedding.is_set():
                fail(work, ShuttingDown())

    def _classify(self, works: list[Work]) -> None:
        rows = [(w, i, row.served, row.source_ids) for w in works for i, row in enumerate(w.rows)]
        # rank classification needs one candidate list per forward
        by_task = group_rows(tuple(row[2].candidates or ()) for row in rows)
        for candidates, indices in by_task.items():
            group = [rows[i] for i in indices]
            input_ids = pad_rows([r[3] for r in group], self.pad_id, self.model.family.default_padding_side)
            mask = pad_rows([[1] * len(r[3]) for r in group], 0, self.model.family.default_padding_side)
            device = self.model.device
            names = [r[2].name for r in group]
            with torch.no_grad():
                if self.model.family.has_head:
                    scores = self.model(input_ids.to(device), mask.to(device), adapter_names=names).logits
                else:
                    target_ids = [group[0][2].collator.target_ids(c) for c in candidates]
                    scores = self.model.score_candidates(input_ids.to(device), mask.to(device), target_ids,
                                                         adapter_names=names)
            for (work, index, served, _), row_scores in zip(group, scores.float().cpu().tolist()):
                labels = list(candidates) or [str(i) for i in range(len(row_scores))]
                if len(row_scores) == 1:  # a regression head
                    result = {"label": None, "score": row_scores[0]}
                else:
                    best = max(range(len(labels)), key=lambda c: row_scores[c])
                    result = {"label": labels[best], "scores": dict(zip(labels, row_scores))}
                finish_row(work, index, result)

    def _generate(self, works: list[Work]) -> None:
        """Decode the works' rows, admitting queued work between steps (continuous batching).
        `works` grows by the generations that join, so a failed batch retries them too."""
        placed = {}

        def join(work: Work) -> None:
            for index, row in enumerate(work.rows):
                placed[id(row)] = (work, index)
                row.cancelled = lambda work=work: work.future.cancelled() or self._shedding.is_set()

        for work in works:
            join(work)
        rows = [row for work in works for row in work.rows]
        if not self.model.family.labels_in_input:
            self._generate_seq2seq(rows, placed)
            return
        # The base model's own rows (no adapter) are prefilled apart from adapters' rows; they
        # join at the first step where the model's cache can merge, else decode after.
        groups = [g for g in ([r for r in rows if r.adapter is None], [r for r in rows if r.adapter is not None]) if g]
        pending = groups[1:]

        stepped = [time.perf_counter()]

        def admit(running: int) -> list[Row]:
            # The step since the last call made one token per row: the admission estimate's
            # service time moves with every step, not only when a decode that never ends ends.
            self.admission.observe(Kind.GENERATE, time.perf_counter() - stepped[0], self._decoding)
            joined = pending.pop() if pending else []
            joined = joined + self._admit(works, running + len(joined), join)
            self._decoding = running + len(joined)
            stepped[0] = time.perf_counter()  # classifications run in _admit are timed apart
            return joined

        def done(row: Row) -> None:
            finish_row(*placed[id(row)], row)

        try:
            self._decoding = len(groups[0])
            generate_rows(self.model, groups[0], self.pad_id, done, admit)
            for group in pending:  # a model whose cache cannot merge (a sliding window)
                self._decoding = len(group)
                generate_rows(self.model, group, self.pad_id, done, admit)
        finally:
            self._decoding = 0

    def _admit(self, works: list[Work], running: int, join) -> list[Row]:
        """Between two decode steps: queued classifications run now (they wait one step, not a
        whole generation); queued generations that fit join the batch. A control action, or a
        generation that does not fit, is held over and stops admission until the batch ends."""
        if not self.continuous or self._held or self._shedding.is_set():
            return []
        joined: list[Row] = []
        classify: list[Work] = []
        while sum(len(w.rows) for w in classify) < self.policy.max_batch_size:
            try:
                work = self.queue.get_nowait()
            except queue.Empty:
                break
            if work.kind is Kind.CLASSIFY:
                classify.append(work)
            elif self.policy.joins(running + len(joined), works, work):
                if self._answerable([work]) and not work.future.cancelled():
                    works.append(work)
                    join(work)
                    joined += work.rows
            else:
                self._held.append(work)
                break
        if classify:
            self._step(Kind.CLASSIFY, [w for w in classify if not w.future.cancelled()])
        return joined

    def _generate_seq2seq(self, rows: list[Row], placed: dict) -> None:
        """Encoder-decoder models: DeptModel.generate over the whole batch (greedy), then each
        row cut at its own max_tokens and stop strings."""
        if any(r.adapter is None for r in rows):
            raise RequestError("a seq2seq server answers through an adapter; name one in 'model'")
        tokenizer, device = self.model.tokenizer, self.model.device
        input_ids = pad_rows([r.source_ids for r in rows], self.pad_id, "right").to(device)
        mask = pad_rows([[1] * len(r.source_ids) for r in rows], 0, "right").to(device)
        new = self.model.generate(input_ids, mask, adapter_names=[r.adapter.name for r in rows],
                                  max_new_tokens=max(r.max_tokens for r in rows), do_sample=False)
        eos = eos_ids(self.model)
        start = self.model.base_model.generation_config.decoder_start_token_id
        for row, tokens in zip(rows, new.tolist()):
            for token in tokens[1:] if tokens and tokens[0] == start else tokens:
                if row.finish_reason is not None:
                    break
                advance(row, token, tokenizer, eos)
            row.finish_reason = row.finish_reason or "length"
            finish_row(*placed[id(row)], row)
