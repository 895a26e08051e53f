"""The job queue: one model, one worker thread, one job at a time; the others wait with their position known.

A job is ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled`` (a queued job can go straight to
``cancelled``). The worker calls ``runner(job)``; the runner reports progress through :meth:`Job.report`, which raises
:class:`JobCancelled` once :meth:`JobQueue.cancel` was asked, so a running job stops at its next frame. Jobs run
whether or not a client is still watching.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prvql.errors import PRVQLError
from prvql.infer.locate import Query

logger = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)


class JobCancelled(Exception):
    """Raised inside a running job when it was cancelled."""


@dataclass(eq=False)
class Job:
    """One locate request.

    Attributes:
        id: random token naming the job (its URL).
        owner: the browser session that made it.
        upload_id: the video it searches.
        query: what it looks for.
        folder: its own output folder (created by the store, removed with the job).
        state: see the module docstring.
        phase: ``"search"`` or ``"render"`` while running.
        done, total: progress of the phase (frames).
        message: why it failed.
        created, started, finished: ``time.time()`` stamps (0 = not yet).
        last_used: last time a client asked about it (for expiry).
    """

    id: str
    owner: str
    upload_id: str
    query: Query
    folder: Path
    state: str = QUEUED
    phase: str = ""
    done: int = 0
    total: int = 0
    message: str = ""
    created: float = field(default_factory=time.time)
    started: float = 0.0
    finished: float = 0.0
    last_used: float = field(default_factory=time.time)
    cancel_requested: threading.Event = field(default_factory=threading.Event)

    def report(self, phase: str, done: int, total: int) -> None:
        """Progress from the runner; raises :class:`JobCancelled` when the job was cancelled."""
        self.phase, self.done, self.total = phase, done, total
        if self.cancel_requested.is_set():
            raise JobCancelled

    def status(self, position: int) -> dict:
        """The JSON the page polls (``position``: 1 = next to run, 0 = not waiting)."""
        now = self.finished or time.time()
        return {
            "id": self.id,
            "video": self.upload_id,
            "state": self.state,
            "position": position,
            "phase": self.phase,
            "done": self.done,
            "total": self.total,
            "message": self.message,
            "seconds": round(now - self.started, 2) if self.started else 0.0,
        }


class JobQueue:
    """First in, first out; one worker thread runs ``runner(job)`` for one job at a time.

    Args:
        runner: does the work, reporting through ``job.report``; a :class:`PRVQLError` fails the job with its
            message, any other exception with a one-line summary (the traceback goes to the log).
        on_finish: called with each job after it ends in ``failed`` or ``cancelled`` (e.g. to empty its folder).
        public_text: words a failure's message for the page, ``public_text(job, message)`` (e.g. the uploaded
            file's name in place of a server path); ``None`` keeps messages as they are.
    """

    def __init__(
        self,
        runner: Callable[[Job], None],
        on_finish: Callable[[Job], None] | None = None,
        public_text: Callable[[Job, str], str] | None = None,
    ) -> None:
        self._runner = runner
        self._on_finish = on_finish
        self._public_text = public_text
        self._waiting: deque[Job] = deque()
        self._cond = threading.Condition()
        self._running: Job | None = None
        self._stop = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the worker thread."""
        self._stop = False
        self._thread = threading.Thread(target=self._work, name="prvql-app-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel the running job, drop the waiting ones and join the worker."""
        with self._cond:
            self._stop = True
            for job in self._waiting:
                self._finish(job, CANCELLED)
            self._waiting.clear()
            if self._running is not None:
                self._running.cancel_requested.set()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, job: Job) -> None:
        with self._cond:
            self._waiting.append(job)
            self._cond.notify_all()

    def position(self, job: Job) -> int:
        """1-based place among the waiting jobs; 0 when it is not waiting."""
        with self._cond:
            for i, waiting in enumerate(self._waiting, 1):
                if waiting is job:
                    return i
            return 0

    def cancel(self, job: Job) -> None:
        """A waiting job is cancelled at once; a running one stops at its next progress report."""
        with self._cond:
            if job.state == QUEUED and job in self._waiting:
                self._waiting.remove(job)
                self._finish(job, CANCELLED)
            elif job.state == RUNNING:
                job.cancel_requested.set()

    def _finish(self, job: Job, state: str, message: str = "") -> None:
        if message and self._public_text is not None:
            message = self._public_text(job, message)
        job.state, job.message, job.finished = state, message, time.time()
        if state != DONE and self._on_finish is not None:
            self._on_finish(job)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                job = self._waiting.popleft()
                job.state, job.started, self._running = RUNNING, time.time(), job
            state, message = DONE, ""
            try:
                self._runner(job)
            except JobCancelled:
                state = CANCELLED
            except PRVQLError as exc:
                state, message = FAILED, str(exc)
            except Exception as exc:  # a job's failure must not stop the server: log it, tell the page in one line
                logger.exception("job %s failed", job.id)
                state, message = FAILED, f"internal error: {type(exc).__name__}: {exc}".splitlines()[0]
            with self._cond:
                self._running = None
                self._finish(job, state, message)
