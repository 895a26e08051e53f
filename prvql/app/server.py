"""The web app: the page (``static/``) and its HTTP API, a Starlette application around a :class:`JobQueue`.

API (JSON; every error is ``{"error": "one line"}`` with a 4xx status):

- ``POST /api/videos?name=NAME`` body = the video's bytes (streamed to disk, ``max_upload_bytes`` at most) -> the
  video's id and info, with ``player`` (:class:`prvql.app.store.Preview`: what the page's player shows, and the
  progress of the H.264 preview made for a video the browser cannot play) and ``memory``
  (:class:`prvql.app.store.MemoryState`: the progress of the video memory indexed right after the upload);
  ``GET /api/videos/ID`` the info again;
  ``GET /api/videos/ID/file`` the video; ``GET /api/videos/ID/preview`` the preview once made;
  ``GET /api/videos/ID/frames/N`` source frame N as JPEG (from the reader the search uses);
  ``PUT|DELETE /api/videos/ID/crop`` a crop image;
- ``POST /api/videos/ID/jobs`` ``{"frame": N, "box": [x1, y1, x2, y2] | null, "crop": bool, "search":
  "before" | "anywhere"}`` -> the job's status; ``GET /api/jobs/ID`` its status (state, queue position, progress);
  ``POST /api/jobs/ID/cancel``; ``GET /api/jobs/ID/files/NAME`` for NAME in ``track.json``, ``track.mp4``,
  ``scores.png``.

A job runs on the upload's video memory (:func:`prvql.infer.memory.locate_memory`: the refinement stages only, the
same track as on the video); a job that starts before the memory is ready waits for it, reporting the phase
``"index"`` (the indexing is the backbone pass over the video the job would otherwise make itself, so waiting costs
no more than searching the video, and the shared CPU/GPU is not split between two passes). If the indexing failed,
the job searches the video (:func:`prvql.infer.locate.locate_video`).

The first visit of the page gives the browser a random session cookie; uploads and jobs belong to that session and
are invisible to any other. Uploads whose client goes away mid-transfer are deleted. Messages name the uploaded file
as the user named it, never a path of the server (:meth:`prvql.app.store.Store.public_text`).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import secrets
from collections.abc import Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from prvql.app.jobs import DONE, Job, JobQueue
from prvql.app.pipeline import OUTPUT_FILES, LoadedModel
from prvql.app.store import READY, Store, Upload
from prvql.errors import PRVQLError
from prvql.infer.locate import locate_video, parse_query
from prvql.infer.memory import VideoMemory, index_video, locate_memory

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
SESSION_COOKIE = "prvql_session"
MAX_CROP_BYTES = 20 * 2**20
MAX_JSON_BYTES = 64 * 2**10
CLEANUP_EVERY_S = 60.0


def size_text(n: int) -> str:
    """Bytes as a short human text (``"1.5 GB"``)."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, str(exc.detail))


async def _bad_input(request: Request, exc: Exception) -> Response:
    return _error(400, str(exc).splitlines()[0])


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return _error(500, f"internal error: {type(exc).__name__} (see the server's log)")


async def _read_body(request: Request, limit: int, what: str) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise HTTPException(413, f"{what} is {size_text(int(length))}; the limit is {size_text(limit)}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"{what} is larger than the limit of {size_text(limit)}")
    return bytes(body)


def create_app(
    loaded: LoadedModel,
    *,
    max_upload_bytes: int = 2**30,
    keep_seconds: float = 3600.0,
    workdir: str | Path | None = None,
) -> Starlette:
    """The application; its lifespan starts the worker and the cleanup task and removes every file at shutdown.

    Args:
        loaded: the model, loaded once.
        max_upload_bytes: the largest video accepted.
        keep_seconds: unused uploads and finished jobs are removed after this long.
        workdir: where the private temporary folder goes (``None`` = the system's temporary directory).
    """
    store = Store(keep_seconds, workdir)

    def run_job(job: Job) -> None:
        upload = store.upload_of(job)
        if upload is None:
            raise PRVQLError("the video was removed before the job ran; upload it again")
        memory = upload.wait_memory(lambda done, total: job.report("index", done, total))
        if memory is None:
            locate_video(
                loaded.cfg, loaded.model, loaded.device, upload.video, job.query, job.folder,
                name=upload.name, progress=job.report,
            )  # fmt: skip
            return
        with VideoMemory.open(memory) as opened:
            locate_memory(
                loaded.cfg, loaded.model, loaded.device, opened, job.query, job.folder,
                name=upload.name, video=upload.video, progress=job.report,
            )  # fmt: skip

    def index_upload(video: Path, memory: Path, progress: Callable[[int, int], None]) -> None:
        index_video(loaded.cfg, loaded.model, loaded.device, video, memory, progress=progress)

    def discard_outputs(job: Job) -> None:
        for name in OUTPUT_FILES:
            (job.folder / name).unlink(missing_ok=True)

    def job_text(job: Job, message: str) -> str:
        return store.public_text(message, store.upload_of(job))

    queue = JobQueue(run_job, on_finish=discard_outputs, public_text=job_text)

    def session(request: Request) -> str:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            raise HTTPException(403, "no session: open the page first (it sets a cookie)")
        return token

    def find_upload(request: Request) -> Upload:
        upload = store.upload(session(request), request.path_params["video"])
        if upload is None or upload.info is None:
            raise HTTPException(404, "no such video (it may have expired: upload it again)")
        return upload

    def find_job(request: Request) -> Job:
        job = store.job(session(request), request.path_params["job"])
        if job is None:
            raise HTTPException(404, "no such job (it may have expired)")
        return job

    def job_status(job: Job) -> dict:
        status = job.status(queue.position(job))
        if job.state == DONE:
            status["files"] = {name: f"/api/jobs/{job.id}/files/{name}" for name in OUTPUT_FILES}
        return status

    async def index(request: Request) -> Response:
        response = FileResponse(STATIC / "index.html", media_type="text/html")
        if not request.cookies.get(SESSION_COOKIE):
            response.set_cookie(SESSION_COOKIE, secrets.token_urlsafe(24), httponly=True, samesite="strict")
        return response

    async def script(request: Request) -> Response:
        return FileResponse(STATIC / "app.js", media_type="text/javascript")

    async def favicon(request: Request) -> Response:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    async def settings(request: Request) -> Response:
        return JSONResponse(
            {"max_upload_bytes": max_upload_bytes, "model_fps": loaded.fps, "device": str(loaded.device)}
        )

    async def upload_video(request: Request) -> Response:
        owner = session(request)
        name = request.query_params.get("name", "video")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_upload_bytes:
            raise HTTPException(413, f"{name} is {size_text(int(length))}; the limit is {size_text(max_upload_bytes)}")
        upload = store.new_upload(owner, name)
        try:
            size = 0
            with open(upload.video, "wb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > max_upload_bytes:
                        raise HTTPException(413, f"{name} is larger than the limit of {size_text(max_upload_bytes)}")
                    f.write(chunk)
            if size == 0:
                raise HTTPException(400, f"{name}: the file is empty")
            try:
                await run_in_threadpool(upload.open, loaded.fps)
            except PRVQLError as exc:
                raise HTTPException(400, f"{upload.name}: not a video this app can read") from exc
            upload.start_preview(lambda text: store.public_text(text, upload))
            upload.start_memory(index_upload, store.index_lock, lambda text: store.public_text(text, upload))
        except ClientDisconnect:
            store.remove_upload(upload)
            logger.info("upload %s: the client went away; removed", upload.id)
            return Response(status_code=400)
        except BaseException:
            store.remove_upload(upload)
            raise
        return JSONResponse(video_json(upload), status_code=201)

    def video_json(upload: Upload) -> dict:
        return {
            "id": upload.id,
            "name": upload.name,
            "crop": upload.crop is not None,
            **upload.info.to_dict(),
            "frame_times": upload.frame_times,  # a variable-rate video's own frame times (s); null at a constant rate
            "player": upload.preview.to_dict(upload.id),
            "memory": upload.memory.to_dict() if upload.memory is not None else None,
        }

    async def video_info(request: Request) -> Response:
        return JSONResponse(video_json(find_upload(request)))

    async def video_file(request: Request) -> Response:
        return FileResponse(find_upload(request).video)

    async def video_preview(request: Request) -> Response:
        upload = find_upload(request)
        preview = upload.preview
        if preview.state != READY:
            raise HTTPException(409, f"{upload.name}: no preview to play ({preview.state})")
        return FileResponse(upload.preview_file, media_type="video/mp4")

    async def video_frame(request: Request) -> Response:
        upload = find_upload(request)
        index = request.path_params["index"]
        if not 0 <= index < upload.info.num_frames:
            raise HTTPException(404, f"frame {index} is out of range (the video has {upload.info.num_frames})")
        try:
            data = await run_in_threadpool(upload.frame_jpeg, index)
        except PRVQLError as exc:
            raise HTTPException(400, store.public_text(str(exc), upload)) from exc
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    async def put_crop(request: Request) -> Response:
        from PIL import Image

        from prvql.data.images import read_image

        upload = find_upload(request)
        data = await _read_body(request, MAX_CROP_BYTES, "the crop image")
        try:  # the same reader as `prvql locate --query`: every image mode, EXIF rotation, bombs refused
            rgb = Image.fromarray(await run_in_threadpool(read_image, io.BytesIO(data), "crop image"))
        except PRVQLError as exc:
            raise HTTPException(400, f"the crop is not an image this app can read (PNG, JPEG, ...): {exc}") from exc
        path = upload.folder / "crop.png"
        await run_in_threadpool(rgb.save, path, "PNG")
        upload.crop = path
        return JSONResponse({"width": rgb.width, "height": rgb.height})

    async def delete_crop(request: Request) -> Response:
        upload = find_upload(request)
        if upload.crop is not None:
            upload.crop.unlink(missing_ok=True)
            upload.crop = None
        return JSONResponse({"crop": False})

    async def create_job(request: Request) -> Response:
        upload = find_upload(request)
        body = await _read_body(request, MAX_JSON_BYTES, "the request")
        try:
            fields = json.loads(body)
        except ValueError:
            raise HTTPException(400, "the request is not JSON") from None
        if not isinstance(fields, dict):
            raise HTTPException(400, "the request must be a JSON object")
        crop = None
        if fields.get("crop"):
            if upload.crop is None:
                raise HTTPException(400, "crop: no crop image was given for this video")
            crop = upload.crop
        query, _ = parse_query(
            upload.info, fields.get("frame"), fields.get("search", "before"), fields.get("box"), crop
        )
        job = store.new_job(session(request), upload, query)
        queue.submit(job)
        return JSONResponse(job_status(job), status_code=202)

    async def get_job(request: Request) -> Response:
        return JSONResponse(job_status(find_job(request)))

    async def cancel_job(request: Request) -> Response:
        job = find_job(request)
        queue.cancel(job)
        return JSONResponse(job_status(job))

    async def job_file(request: Request) -> Response:
        job = find_job(request)
        name = request.path_params["name"]
        if name not in OUTPUT_FILES:
            raise HTTPException(404, f"no file {name!r}: a job has {', '.join(OUTPUT_FILES)}")
        if job.state != DONE:
            raise HTTPException(409, f"the job is {job.state}: it has no {name}")
        path = job.folder / name
        if not path.is_file():
            raise HTTPException(404, f"{name} was not written")
        headers = {"Content-Disposition": f'attachment; filename="{name}"'} if name == "track.json" else None
        return FileResponse(path, headers=headers)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        async def janitor() -> None:
            while True:
                await asyncio.sleep(min(CLEANUP_EVERY_S, max(keep_seconds / 2, 1.0)))
                removed = await run_in_threadpool(store.cleanup)
                if removed:
                    logger.info("removed %d expired uploads and jobs", removed)

        queue.start()
        task = asyncio.create_task(janitor())
        try:
            yield
        finally:
            task.cancel()
            await run_in_threadpool(queue.stop)
            store.close()

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/app.js", script),
            Route("/favicon.ico", favicon),
            Route("/favicon.svg", favicon),
            Route("/api/settings", settings),
            Route("/api/videos", upload_video, methods=["POST"]),
            Route("/api/videos/{video}", video_info),
            Route("/api/videos/{video}/file", video_file),
            Route("/api/videos/{video}/preview", video_preview),
            Route("/api/videos/{video}/frames/{index:int}", video_frame),
            Route("/api/videos/{video}/crop", put_crop, methods=["PUT"]),
            Route("/api/videos/{video}/crop", delete_crop, methods=["DELETE"]),
            Route("/api/videos/{video}/jobs", create_job, methods=["POST"]),
            Route("/api/jobs/{job}", get_job),
            Route("/api/jobs/{job}/cancel", cancel_job, methods=["POST"]),
            Route("/api/jobs/{job}/files/{name}", job_file),
        ],
        exception_handlers={HTTPException: _http_error, PRVQLError: _bad_input, Exception: _internal_error},
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.queue = queue
    return app
