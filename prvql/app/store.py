"""Uploads and jobs on disk: each in its own folder under one private temporary root, owned by one browser session.

Every id is a random token made here; file names inside the folders are fixed (``video<ext>``, ``crop.png``, the
outputs in :data:`prvql.app.pipeline.OUTPUT_FILES`), so no path ever comes from a client. A lookup by another session
finds nothing. Items not used for ``keep_seconds`` are removed by :meth:`Store.cleanup` (an upload only once no job
of it is waiting or running); :meth:`Store.close` removes the root.
"""

from __future__ import annotations

import io
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from prvql.app.jobs import FINISHED, Job
from prvql.data.video import VideoReader
from prvql.infer.locate import Query, VideoInfo

# extensions kept on the stored copy so that the browser (and FFmpeg) see what the file is; anything else -> .video
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".3gp", ".ogv", ".wmv")
MAX_NAME_CHARS = 120
JPEG_QUALITY = 92  # previews to draw boxes on: full-resolution colour (no chroma subsampling)


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
        crop: ``folder / "crop.png"`` when a crop image was given.
        last_used: ``time.time()`` of the last request about it.
    """

    id: str
    owner: str
    name: str
    folder: Path
    video: Path
    info: VideoInfo | None = None
    crop: Path | None = None
    last_used: float = field(default_factory=time.time)
    _reader: VideoReader | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self, model_fps: float) -> VideoInfo:
        """Read the stored file as a video (raises :class:`prvql.errors.VideoError` if it is not one)."""
        with self._lock:
            reader = VideoReader(self.video)
            try:
                self.info = VideoInfo.of(reader, model_fps)
            except BaseException:
                reader.close()
                raise
            self._reader = reader
        return self.info

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
