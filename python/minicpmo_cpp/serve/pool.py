"""The sessions of one loaded model and the bounded queue in front of them.

One ``OmniSession`` loads the weights; further conversations are ``new_session()``s over the same
model, made when the load needs them, up to ``max_sessions``. A request takes an idle session for
its whole duration; when none is free it waits in a queue of at most ``max_queue`` requests for at
most ``queue_timeout`` seconds. Past the queue the answer is 429, past the wait 503, both with
``Retry-After``: the queue never grows without bound. Idle sessions keep their KV cache, so a
follow-up turn that lands on the same session only decodes what is new.

Everything here runs on the event loop's thread; the sessions compute in worker threads.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from ..session import OmniSession
from .errors import ApiError


class Lease:
    """One request's hold on a session; ``release()`` (idempotent) gives it back."""

    def __init__(self, pool: "SessionPool", session: OmniSession):
        self.pool, self.session = pool, session
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.pool._give_back(self.session)


class SessionPool:
    def __init__(self, first: OmniSession, max_sessions: int, max_queue: int, queue_timeout: float,
                 retry_after: int):
        if max_sessions < 1 or max_queue < 0:
            raise ValueError("max_sessions must be >= 1 and max_queue >= 0")
        self.first = first
        self.max_sessions, self.max_queue, self.queue_timeout = max_sessions, max_queue, queue_timeout
        self.retry_after = retry_after
        self._idle: list[OmniSession] = [first]
        self._all: list[OmniSession] = [first]
        self._free = asyncio.Semaphore(max_sessions)
        self._waiting = 0
        self.served = 0
        # the sessions' blocking calls; sized so every session can compute and one more can start
        self.executor = ThreadPoolExecutor(max_workers=max_sessions + 2, thread_name_prefix="minicpmo-serve")

    @property
    def busy(self) -> int:
        return len(self._all) - len(self._idle)

    @property
    def waiting(self) -> int:
        return self._waiting

    async def acquire(self) -> Lease:
        if self._free.locked() and self._waiting >= self.max_queue:
            raise ApiError(429, f"the server is busy: {self.max_sessions} session(s) computing and "
                                f"{self._waiting} request(s) queued; retry later",
                           type_="rate_limit_error", code="server_busy",
                           headers={"Retry-After": str(self.retry_after)})
        self._waiting += 1
        try:
            await asyncio.wait_for(self._free.acquire(), self.queue_timeout)
        except asyncio.TimeoutError:
            raise ApiError(503, f"no session became free within {self.queue_timeout:g} s; retry later",
                           type_="server_error", code="queue_timeout",
                           headers={"Retry-After": str(self.retry_after)}) from None
        finally:
            self._waiting -= 1
        try:
            if self._idle:
                session = self._idle.pop()
            else:
                loop = asyncio.get_running_loop()
                session = await loop.run_in_executor(self.executor, self.first.new_session)
                self._all.append(session)
        except BaseException:
            self._free.release()
            raise
        self.served += 1
        return Lease(self, session)

    def _give_back(self, session: OmniSession) -> None:
        self._idle.append(session)
        self._free.release()

    async def run(self, fn, *args):
        """``fn(*args)`` on a worker thread (a session's blocking call)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        for s in self._all:
            s.close()
