"""Concurrent requests batched on the device: a short collection window, then one batch for everything that came.

Each request puts its files on a queue and awaits its own results. One worker takes the first waiting request,
keeps collecting for :attr:`Batcher.window` seconds (or until :attr:`Batcher.max_images` files wait), groups what
it has by what was asked (``segment`` / ``predict``, pictures, explanation), runs each group as one batch in a
single inference thread (the device serves one batch at a time, at its batch throughput), and hands every request
its own rows back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field


@dataclass
class Job:
    """One request's work: ``key`` says what was asked (requests with the same key share a batch)."""

    key: tuple
    files: list
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Batcher:
    """Collect jobs from concurrent requests and run them in batches with ``run(key, files) -> rows``.

    Attributes:
        window: seconds to keep collecting after the first job arrives.
        max_images: run at once when this many files wait.
        batches: (number of requests, number of files) of every batch run so far (for tests and the load test).
    """

    def __init__(self, run: Callable[[tuple, list], list], window: float = 0.01, max_images: int = 64) -> None:
        self.run, self.window, self.max_images = run, window, max_images
        self.batches: list[tuple[int, int]] = []
        self._queue: asyncio.Queue[Job] | None = None
        self._owner: asyncio.AbstractEventLoop | None = None
        self._worker: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lungcls-infer")

    async def submit(self, key: tuple, files: list) -> list:
        """The rows for ``files`` (in order), once their batch has run; the batch's exception if it failed."""
        loop = asyncio.get_running_loop()
        if self._queue is None or self._owner is not loop:  # one worker per event loop (a test client makes several)
            self._owner, self._queue = loop, asyncio.Queue()
            self._worker = loop.create_task(self._loop())
        job = Job(key, files)
        await self._queue.put(job)
        return await job.done

    async def _loop(self) -> None:
        while True:
            jobs = [await self._queue.get()]
            deadline = time.monotonic() + self.window
            while sum(len(j.files) for j in jobs) < self.max_images:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:
                    break
            for key in dict.fromkeys(j.key for j in jobs):
                await self._run_group(key, [j for j in jobs if j.key == key and not j.done.cancelled()])

    async def _run_group(self, key: tuple, jobs: list[Job]) -> None:
        if not jobs:
            return
        files = [f for j in jobs for f in j.files]
        self.batches.append((len(jobs), len(files)))
        try:
            rows = await asyncio.get_running_loop().run_in_executor(self._pool, self.run, key, files)
        except Exception as e:  # every request of the batch learns why
            for j in jobs:
                if not j.done.done():
                    j.done.set_exception(e)
            return
        start = 0
        for j in jobs:
            if not j.done.done():
                j.done.set_result(rows[start : start + len(j.files)])
            start += len(j.files)

    def close(self) -> None:
        """Stop the worker and the inference thread."""
        if self._worker is not None:
            self._worker.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
