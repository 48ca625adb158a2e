"""Scheduling: one executor per accelerator calls the interpreters; per-model bounded queues feed it.

- Models that run on the same delegate share one executor, so an accelerator runs one inference at a time, back to
  back, with no idle gap while requests wait. The CPU executor may run `instances` threads, each with its own copy
  of the interpreter (`--instances`, Triton's instance count): on a multi-core board, two single-threaded
  interpreters side by side do more inferences per second than one on two threads, and leave whole cores to the
  HTTP side.
- Between models, smooth weighted round-robin (`--priority name=weight`): over any window each model with work
  gets its weight's share of turns.
- A full queue refuses at once (`Overloaded`, answered 503 with Retry-After); a request past its deadline is
  answered without running (`DeadlineExceeded`, 504).
- Dynamic batching for models whose batch dimension is dynamic: requests waiting (up to `batch_timeout` after the
  first) are stacked into one invoke of at most `max_batch` rows and the outputs split back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from edgert.errors import EdgertError

log = logging.getLogger("edgert.serve")


class Overloaded(Exception):
    """The model's queue is full."""

    def __init__(self, model: str, depth: int, retry_after: int):
        super().__init__(f"model '{model}' has {depth} requests queued (--max-queue); retry after {retry_after} s")
        self.retry_after = retry_after


class DeadlineExceeded(Exception):
    """The request's timeout passed before it could run."""


class Stopped(Exception):
    """The server is shutting down."""


@dataclass
class Job:
    """One request waiting for its model: inputs in model order, already checked."""

    model: str
    inputs: list[np.ndarray]
    rows: int  # its batch size (the first dimension)
    deadline: float | None  # time.monotonic() seconds
    loaded: object = None  # the repository.Version the inputs were checked against; None: the current one
    enqueued: float = field(default_factory=time.monotonic)
    future: Future = field(default_factory=Future)
    # Filled in by the executor, for the access log and the metrics:
    queue_s: float = 0.0
    compute_s: float = 0.0
    batch: int = 0
    version: str = ""


@dataclass
class Lane:
    """One model's queue and scheduling state."""

    name: str
    weight: int = 1
    batchable: bool = False
    jobs: deque = field(default_factory=deque)
    current: int = 0  # smooth weighted round-robin credit


class Executor:
    """The thread (on the CPU, `workers` threads) that alone runs the models of one accelerator."""

    def __init__(self, key: str, scheduler: Scheduler, workers: int = 1):
        self.key, self.scheduler = key, scheduler
        self.lanes: dict[str, Lane] = {}
        self.cond = threading.Condition()
        self.stopping = False
        self.threads = [threading.Thread(target=self._loop, args=(i,), name=f"edgert-serve-{key}-{i}", daemon=True)
                        for i in range(workers)]
        for thread in self.threads:
            thread.start()

    # -- submission (any thread) -------------------------------------------------------------------------------

    def submit(self, lane_name: str, job: Job) -> None:
        with self.cond:
            lane = self.lanes[lane_name]
            self.refuse_if_full(lane)
            lane.jobs.append(job)
            self.scheduler.on_depth(lane_name, len(lane.jobs))
            self.cond.notify()

    def refuse_if_full(self, lane: Lane) -> None:
        """Raise Stopped or Overloaded when `lane` cannot take another job now."""
        if self.stopping:
            raise Stopped("the server is shutting down")
        if len(lane.jobs) >= self.scheduler.max_queue:
            raise Overloaded(lane.name, len(lane.jobs), self.scheduler.retry_after(self, lane))

    # -- the executor thread -----------------------------------------------------------------------------------

    def _pick(self) -> Lane | None:
        """Smooth weighted round-robin (as nginx balances upstreams) over the lanes that have work."""
        ready = [lane for lane in self.lanes.values() if lane.jobs]
        if not ready:
            return None
        total = 0
        for lane in ready:
            lane.current += lane.weight
            total += lane.weight
        best = max(ready, key=lambda lane: lane.current)
        best.current -= total
        return best

    def _take(self, lane: Lane) -> list[Job]:
        """The next job of `lane` and, when it batches, those that can join it (waiting up to batch_timeout)."""
        s = self.scheduler
        first = lane.jobs.popleft()
        jobs, rows = [first], first.rows
        if not (lane.batchable and s.max_batch > 1):
            return jobs
        until = first.enqueued + s.batch_timeout
        while rows < s.max_batch:
            if lane.jobs:
                if rows + lane.jobs[0].rows > s.max_batch or lane.jobs[0].loaded is not first.loaded:
                    break
                job = lane.jobs.popleft()
                jobs.append(job)
                rows += job.rows
                continue
            left = until - time.monotonic()
            if left <= 0 or self.stopping:
                break
            self.cond.wait(left)
        return jobs

    def _loop(self, slot: int) -> None:
        while True:
            with self.cond:
                lane = self._pick()
                while lane is None:
                    if self.stopping:
                        return
                    self.cond.wait()
                    lane = self._pick()
                jobs = self._take(lane)
                self.scheduler.on_depth(lane.name, len(lane.jobs))
            self._run(lane.name, jobs, slot)

    def _run(self, name: str, jobs: list[Job], slot: int = 0) -> None:
        now = time.monotonic()
        live = []
        for job in jobs:
            job.queue_s = now - job.enqueued
            if job.deadline is not None and now > job.deadline:
                job.future.set_exception(DeadlineExceeded(
                    f"the request waited {job.queue_s * 1e3:.1f} ms, past its timeout; it was not run"))
            elif job.future.set_running_or_notify_cancel():
                live.append(job)
        if not live:
            return
        entry = self.scheduler.repository.get(name)
        if entry is None or not entry.ready:
            for job in live:
                job.future.set_exception(Stopped(f"model '{name}' was unloaded while the request waited"))
            return
        loaded = live[0].loaded or entry.current
        model = loaded.replicas[slot % len(loaded.replicas)]
        version = loaded.id
        inputs = live[0].inputs if len(live) == 1 else [
            np.concatenate([job.inputs[i] for job in live]) for i in range(len(live[0].inputs))]
        started = time.perf_counter()
        try:
            outputs = model.run(inputs)
        except EdgertError as exc:
            for job in live:
                job.future.set_exception(exc)
            return
        except Exception as exc:  # noqa: BLE001 - a native failure must answer its requests, not kill the thread
            log.exception("%s: inference failed", name)
            for job in live:
                job.future.set_exception(RuntimeError(f"inference failed ({type(exc).__name__})"))
            return
        compute = time.perf_counter() - started
        rows = sum(job.rows for job in live)
        self.scheduler.on_batch(name, rows, compute)
        start = 0
        for job in live:
            job.compute_s, job.batch, job.version = compute, rows, version
            if len(live) == 1:
                job.future.set_result(outputs)
            else:
                job.future.set_result([o[start:start + job.rows] for o in outputs])
            start += job.rows

    def stop(self, timeout: float) -> None:
        """Let the queued jobs finish (or fail them after `timeout`), then end the thread."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        until = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, until - time.monotonic()))
        with self.cond:
            for lane in self.lanes.values():
                while lane.jobs:
                    job = lane.jobs.popleft()
                    if job.future.set_running_or_notify_cancel():
                        job.future.set_exception(Stopped("the server shut down before the request ran"))


class Scheduler:
    """Routes each model's jobs to its accelerator's executor."""

    def __init__(self, repository, *, max_queue: int = 64, max_batch: int = 1, batch_timeout: float = 0.002,
                 priorities: dict[str, int] | None = None, metrics=None, instances: int = 1):
        self.repository = repository
        self.instances = instances  # executor threads (and interpreters per model) on the CPU
        self.max_queue, self.max_batch, self.batch_timeout = max_queue, max_batch, batch_timeout
        self.priorities = priorities or {}
        self.metrics = metrics
        self.executors: dict[str, Executor] = {}
        self._routes: dict[str, Executor] = {}
        self._lock = threading.Lock()
        self._mean_s: dict[str, float] = {}
        self.inferences = 0  # rows run, all models: what energy per inference divides by

    @staticmethod
    def accelerator(model) -> str:
        """Models on the same delegate share an executor: the CPU kernels count as one accelerator."""
        used = model.delegation.used
        return "cpu" if used in ("xnnpack", "cpu", "none", "") or model.delegation.fallback else used

    def copies(self, model) -> int:
        """Interpreters to keep of a model: one per CPU executor thread; an accelerator (an Edge TPU, a GPU) is
        one device and runs one."""
        return self.instances if self.accelerator(model) == "cpu" else 1

    def route(self, entry) -> None:
        """Attach a (re)loaded model to its accelerator's executor. Called by the repository after each load."""
        key = self.accelerator(entry.model)
        batchable = all(s.shape_signature[:1] == (-1,) for s in entry.model.inputs)
        with self._lock:
            old = self._routes.get(entry.name)
            executor = self.executors.get(key) or self.executors.setdefault(
                key, Executor(key, self, self.copies(entry.model)))
            with executor.cond:
                lane = executor.lanes.get(entry.name)
                if lane is None:
                    lane = executor.lanes[entry.name] = Lane(entry.name, self.priorities.get(entry.name, 1))
                lane.batchable = batchable
            if old is not None and old is not executor:  # moved to another accelerator: its waiting jobs follow
                with old.cond:
                    moved = old.lanes.pop(entry.name, None)
                if moved is not None:
                    for job in moved.jobs:
                        executor.submit(entry.name, job)
            self._routes[entry.name] = executor
        if self.metrics is not None:
            self.metrics.on_load(entry, key)

    def submit(self, name: str, job: Job) -> Future:
        """Queue a job. Raises: Overloaded, Stopped, KeyError (not routed)."""
        self._routes[name].submit(name, job)
        return job.future

    def admit(self, name: str) -> None:
        """Refuse at once, before the request's body is read and decoded, when the model's queue is full now: past
        capacity, a refusal should cost the server (and the accepted requests sharing its cores) next to nothing.
        `submit` checks again, since the queue may fill meanwhile.

        Raises: Overloaded, Stopped.
        """
        executor = self._routes.get(name)
        lane = executor.lanes.get(name) if executor else None
        if lane is not None:
            executor.refuse_if_full(lane)

    def retry_after(self, executor: Executor, lane: Lane) -> int:
        """Seconds until the queue has likely drained, rounded up (HTTP allows whole seconds only)."""
        mean = self._mean_s.get(lane.name, 0.01)
        return max(1, int(len(lane.jobs) * mean + 0.999))

    def on_batch(self, name: str, rows: int, seconds: float) -> None:
        self.inferences += rows
        previous = self._mean_s.get(name)
        self._mean_s[name] = seconds if previous is None else 0.9 * previous + 0.1 * seconds
        if self.metrics is not None:
            self.metrics.batch_size.labels(name).observe(rows)

    def on_depth(self, name: str, depth: int) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.labels(name).set(depth)

    def depth(self, name: str) -> int:
        executor = self._routes.get(name)
        lane = executor.lanes.get(name) if executor else None
        return len(lane.jobs) if lane else 0

    def stop(self, timeout: float = 10.0) -> None:
        for executor in list(self.executors.values()):
            executor.stop(timeout)
