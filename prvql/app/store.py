"""Uploads and jobs on disk: each in its own folder under one private temporary root, owned by one browser session.

Every id is a random token made here; file names inside the folders are fixed (``video<ext>``, ``preview.mp4``,
``crop.png``, the outputs in :data:`prvql.app.pipeline.OUTPUT_FILES`), so no path ever comes from a client. A lookup
by another session finds nothing. Items not used for ``keep_seconds`` are removed by :meth:`Store.cleanup` (an upload
only once no job of it is waiting or running); :meth:`Store.close` removes the root.

A video the browser cannot play (:func:`browser_plays`: AVI, HEVC, 10-bit, ...) or whose frame rate varies gets a
preview: an H.264 MP4 encoded once per upload, in a thread, from the frames of :class:`~prvql.data.video.VideoReader`
(preview frame i is the reader's frame i, at the reader's average rate), so the player and the frames drawn on
agree. Messages meant for the page go through :meth:`Store.public_text`, which puts the uploaded file's name in
place of any server path.

Every upload is also indexed once, in a thread, into a video memory (``memory.h5`` in its folder, see
:mod:`prvql.infer.memory`): its sampled frames embedded by the model, so that each Locate on it runs the refinement
stages only. One upload is indexed at a time (:attr:`Store.index_lock`); closing the upload (expiry, shutdown) stops
its indexing at the next block of frames, and the memory goes with the folder.
"""

from __future__ import annotations

import io
import logging
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av

from prvql.app.jobs import FINISHED, Job
from prvql.data.video import VideoReader, write_video
from prvql.errors import PRVQLError
from prvql.infer.locate import Query, VideoInfo

logger = logging.getLogger(__name__)

# extensions kept on the stored copy so that the browser (and FFmpeg) see what the file is; anything else -> .video
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".3gp", ".ogv", ".wmv")
MAX_NAME_CHARS = 120
JPEG_QUALITY = 92  # previews to draw boxes on: full-resolution colour (no chroma subsampling)

# what Chromium, Firefox and Safari all play: stored suffix -> (FFmpeg demuxer name part, codecs); 8-bit 4:2:0 only
BROWSER_FORMATS = {
    ".mp4": ("mp4", {"h264"}),
    ".m4v": ("mp4", {"h264"}),
    ".mov": ("mp4", {"h264"}),
    ".webm": ("webm", {"vp8", "vp9"}),
}
BROWSER_PIXEL_FORMATS = {"yuv420p", "yuvj420p"}
PREVIEW_MAX_SIDE = 1280  # the preview only plays in the page: boxes are drawn on full-size frames from the reader
PREVIEW_CRF = 23

# the preview's states: the upload itself plays in the browser, or the preview is being made, ready or failed
ORIGINAL, MAKING, READY, FAILED = "original", "making", "ready", "failed"


def browser_plays(path: Path) -> bool:
    """Whether browsers play the video file ``path`` as it is (judged from its suffix, container, codec and pixel
    format; an unreadable file is judged unplayable)."""
    wanted = BROWSER_FORMATS.get(path.suffix.lower())
    if wanted is None:
        return False
    demuxer, codecs = wanted
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return (
                demuxer in container.format.name.split(",")
                and stream.codec_context.name in codecs
                and stream.codec_context.pix_fmt in BROWSER_PIXEL_FORMATS
            )
    except (av.FFmpegError, OSError, IndexError, ValueError):
        return False


def preview_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) of the preview: at most :data:`PREVIEW_MAX_SIDE` pixels a side, both even (yuv420p)."""
    scale = min(1.0, PREVIEW_MAX_SIDE / max(height, width))
    return max(2, 2 * round(height * scale / 2)), max(2, 2 * round(width * scale / 2))


class _Stopped(Exception):
    """The upload was closed while its preview was being made."""


@dataclass
class Preview:
    """The video the page's player shows.

    Attributes:
        state: :data:`ORIGINAL` (the upload plays as it is), :data:`MAKING`, :data:`READY` or :data:`FAILED`.
        done, total: frames encoded so far, frames to encode.
        message: why it failed (the uploaded file's name, no server path).
    """

    state: str
    done: int = 0
    total: int = 0
    message: str = ""

    def to_dict(self, upload_id: str) -> dict:
        """The JSON the page polls; ``url`` is set once there is something to play."""
        url = None
        if self.state == ORIGINAL:
            url = f"/api/videos/{upload_id}/file"
        elif self.state == READY:
            url = f"/api/videos/{upload_id}/preview"
        return {"state": self.state, "done": self.done, "total": self.total, "message": self.message, "url": url}


@dataclass
class MemoryState:
    """The upload's video memory.

    Attributes:
        state: :data:`MAKING` (waiting for its turn, or being indexed), :data:`READY` or :data:`FAILED`.
        done, total: sampled frames embedded so far, frames to embed (0 until indexing starts).
        message: why it failed (the uploaded file's name, no server path).
    """

    state: str = MAKING
    done: int = 0
    total: int = 0
    message: str = ""

    def to_dict(self) -> dict:
        """The JSON the page polls."""
        return {"state": self.state, "done": self.done, "total": self.total, "message": self.message}


# index(video, memory file, progress(done, total)): writes the memory (prvql.infer.memory.index_video)
Indexer = Callable[[Path, Path, Callable[[int, int], None]], None]


def display_name(name: str) -> str:
    """A client's file name reduced to a short base name for display (never used as a path)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if c.isprintable()).strip()
    return base[:MAX_NAME_CHARS] or "video"


@dataclass(eq=False)
class Upload:
    """One uploaded video and its optional crop image.

    Attributes:
        id: random token.
        owner: the browser session.
        name: the client's file name, for display only.
        folder: its own folder.
        video: the stored file (``folder / "video<ext>"``).
        info: set once the file has been read as a video.
        frame_times: every source frame's time (s) for a variable-rate video; None at a constant rate.
        preview: what the page's player shows (set by :meth:`open`).
        crop: ``folder / "crop.png"`` when a crop image was given.
        memory: its video memory's state (set by :meth:`start_memory`).
        last_used: ``time.time()`` of the last request about it.
    """

    id: str
    owner: str
    name: str
    folder: Path
    video: Path
    info: VideoInfo | None = None
    frame_times: tuple[float, ...] | None = None
    preview: Preview | None = None
    crop: Path | None = None
    memory: MemoryState | None = None
    last_used: float = field(default_factory=time.time)
    _reader: VideoReader | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closing: threading.Event = field(default_factory=threading.Event)
    _preview_thread: threading.Thread | None = None
    _memory_thread: threading.Thread | None = None
    _memory_ended: threading.Event = field(default_factory=threading.Event)

    @property
    def preview_file(self) -> Path:
        return self.folder / "preview.mp4"

    @property
    def memory_file(self) -> Path:
        return self.folder / "memory.h5"

    def open(self, model_fps: float) -> VideoInfo:
        """Read the stored file as a video (raises :class:`prvql.errors.VideoError` if it is not one) and decide
        what the player shows; a preview still to make is started with :meth:`start_preview`."""
        with self._lock:
            reader = VideoReader(self.video)
            try:
                self.info = VideoInfo.of(reader, model_fps)
            except BaseException:
                reader.close()
                raise
            self._reader = reader
            self.frame_times = None if reader.constant_rate else tuple(reader.times)
            # a variable frame rate gets a preview too: its frames at a constant rate map the player's time to frames
            playable = reader.constant_rate and browser_plays(self.video)
            self.preview = Preview(ORIGINAL) if playable else Preview(MAKING, total=self.info.num_frames)
        return self.info

    def start_preview(self, public_text: Callable[[str], str]) -> None:
        """Encode the preview in a thread when the player needs one (``public_text`` words a failure for the page)."""
        if self.preview is None or self.preview.state != MAKING:
            return
        thread = threading.Thread(target=self._make_preview, args=(public_text,), name="prvql-app-preview", daemon=True)
        self._preview_thread = thread
        thread.start()

    def _make_preview(self, public_text: Callable[[str], str]) -> None:
        """H.264 MP4 of the reader's frames at the reader's rate; frame i of it is frame i of the search's reader."""
        assert self.preview is not None and self.info is not None
        preview = self.preview
        size = preview_size(self.info.height, self.info.width)

        def frames():
            with VideoReader(self.video) as reader:
                for done, frame in enumerate(reader.iter_frames(size=size), 1):
                    if self._closing.is_set():
                        raise _Stopped
                    yield frame
                    preview.done = done

        try:
            write_video(self.preview_file, frames(), self.info.fps, crf=PREVIEW_CRF)
        except _Stopped:
            return
        except PRVQLError as exc:
            preview.state, preview.message = FAILED, public_text(f"no preview to play: {exc}")
            return
        except Exception as exc:  # a thread's failure must reach the page as one line, never stop the server
            logger.exception("preview of upload %s failed", self.id)
            preview.state, preview.message = FAILED, public_text(f"no preview to play: {type(exc).__name__}: {exc}")
            return
        preview.state = READY

    def start_memory(self, index: Indexer, lock: threading.Lock, public_text: Callable[[str], str]) -> None:
        """Index the video into :attr:`memory_file` in a thread, once ``lock`` is free (one indexing at a time);
        ``public_text`` words a failure for the page."""
        self.memory = MemoryState(total=len(self.info.sources) if self.info is not None else 0)
        thread = threading.Thread(
            target=self._make_memory, args=(index, lock, public_text), name="prvql-app-memory", daemon=True
        )
        self._memory_thread = thread
        thread.start()

    def _make_memory(self, index: Indexer, lock: threading.Lock, public_text: Callable[[str], str]) -> None:
        memory = self.memory
        assert memory is not None

        def progress(done: int, total: int) -> None:
            memory.done, memory.total = done, total
            if self._closing.is_set():
                raise _Stopped

        try:
            while not lock.acquire(timeout=0.2):
                if self._closing.is_set():
                    return
            try:
                index(self.video, self.memory_file, progress)
            finally:
                lock.release()
            memory.state = READY
        except _Stopped:
            return
        except Exception as exc:  # a thread's failure must reach the page as one line, never stop the server
            if self._closing.is_set():  # the folder went away under it
                return
            if not isinstance(exc, PRVQLError):
                logger.exception("indexing upload %s failed", self.id)
            memory.state, memory.message = FAILED, public_text(f"no memory: {type(exc).__name__}: {exc}")
        finally:
            self._memory_ended.set()

    def wait_memory(self, report: Callable[[int, int], None]) -> Path | None:
        """Wait until the memory is indexed, calling ``report(done, total)`` meanwhile (it may raise to stop
        waiting); the memory file, or None when there is none (indexing failed or was stopped)."""
        memory = self.memory
        if memory is None:
            return None
        while memory.state == MAKING and not self._memory_ended.is_set():
            report(memory.done, memory.total)
            self._memory_ended.wait(0.2)
        return self.memory_file if memory.state == READY else None

    def frame_jpeg(self, index: int) -> bytes:
        """Source frame ``index`` as JPEG bytes (the exact frame ``prvql locate --query-frame`` reads)."""
        from PIL import Image

        with self._lock:
            if self._reader is None:
                raise RuntimeError("upload not opened")
            frame = self._reader.read([index])[0]
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
        return buffer.getvalue()

    def close(self) -> None:
        """Stop the preview (at its next frame) and the indexing (at its next block of frames); close the reader."""
        self._closing.set()
        for thread in (self._preview_thread, self._memory_thread):
            if thread is not None:
                thread.join(30.0)
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None


class Store:
    """The uploads and jobs of a running server.

    Args:
        keep_seconds: how long an unused upload or a finished job is kept.
        root: parent of the private temporary folder (``None`` = the system's temporary directory).
    """

    def __init__(self, keep_seconds: float, root: str | Path | None = None) -> None:
        self.keep_seconds = keep_seconds
        self.root = Path(tempfile.mkdtemp(prefix="prvql-app-", dir=root))
        self._uploads: dict[str, Upload] = {}
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self.index_lock = threading.Lock()  # one upload indexed at a time: the model's CPU/GPU is shared

    def public_text(self, text: str, upload: Upload | None) -> str:
        """``text``'s first line with the upload's stored file named as uploaded and any other server path hidden:
        what the page may show (an error names ``Megamind.avi``, never ``/tmp/prvql-app-.../video.avi``)."""
        text = str(text).splitlines()[0] if str(text).strip() else ""
        if upload is not None:
            for path in {upload.video, upload.video.resolve()}:
                text = text.replace(str(path), upload.name)
        for root in {str(self.root), str(self.root.resolve())}:
            text = re.sub(re.escape(root) + r"[^\s:,;()'\"]*", "(a file of the server)", text)
        return text

    def _folder(self, kind: str) -> tuple[str, Path]:
        token = secrets.token_urlsafe(16)
        folder = self.root / kind / token
        folder.mkdir(parents=True)
        return token, folder

    def new_upload(self, owner: str, name: str) -> Upload:
        name = display_name(name)
        suffix = Path(name).suffix.lower()
        token, folder = self._folder("videos")
        upload = Upload(token, owner, name, folder, folder / f"video{suffix if suffix in VIDEO_SUFFIXES else '.video'}")
        with self._lock:
            self._uploads[token] = upload
        return upload

    def new_job(self, owner: str, upload: Upload, query: Query) -> Job:
        token, folder = self._folder("jobs")
        if query.crop is not None:  # the job keeps its own copy: a new crop for the video does not change it
            shutil.copyfile(query.crop, folder / "query.png")
            query = Query(frame=query.frame, search=query.search, crop=folder / "query.png")
        job = Job(token, owner, upload.id, query, folder)
        with self._lock:
            self._jobs[token] = job
        return job

    def upload(self, owner: str, token: str) -> Upload | None:
        """The upload ``token`` if ``owner`` made it (else None); marks it used."""
        with self._lock:
            upload = self._uploads.get(token)
        if upload is None or not secrets.compare_digest(upload.owner, owner):
            return None
        upload.last_used = time.time()
        return upload

    def job(self, owner: str, token: str) -> Job | None:
        """The job ``token`` if ``owner`` made it (else None); marks it used."""
        with self._lock:
            job = self._jobs.get(token)
        if job is None or not secrets.compare_digest(job.owner, owner):
            return None
        job.last_used = time.time()
        return job

    def upload_of(self, job: Job) -> Upload | None:
        with self._lock:
            return self._uploads.get(job.upload_id)

    def remove_upload(self, upload: Upload) -> None:
        with self._lock:
            self._uploads.pop(upload.id, None)
        upload.close()
        shutil.rmtree(upload.folder, ignore_errors=True)

    def cleanup(self, now: float | None = None) -> int:
        """Remove finished jobs and uploads unused for ``keep_seconds``; returns how many items went."""
        now = time.time() if now is None else now
        with self._lock:
            old_jobs = [j for j in self._jobs.values() if j.state in FINISHED and now - j.last_used > self.keep_seconds]
            for job in old_jobs:
                del self._jobs[job.id]
            active = {j.upload_id for j in self._jobs.values() if j.state not in FINISHED}
            old_uploads = [
                u for u in self._uploads.values() if u.id not in active and now - u.last_used > self.keep_seconds
            ]
            for upload in old_uploads:
                del self._uploads[upload.id]
        for job in old_jobs:
            shutil.rmtree(job.folder, ignore_errors=True)
        for upload in old_uploads:
            upload.close()
            shutil.rmtree(upload.folder, ignore_errors=True)
        return len(old_jobs) + len(old_uploads)

    def close(self) -> None:
        """Close every video and remove the whole root folder."""
        with self._lock:
            uploads = list(self._uploads.values())
            self._uploads.clear()
            self._jobs.clear()
        for upload in uploads:
            upload.close()
        shutil.rmtree(self.root, ignore_errors=True)
