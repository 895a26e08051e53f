"""A video memory: a video's frames embedded once and kept on disk, so that later queries pay only for the query's
embedding and the refinement stages.

:func:`index_video` samples a video at the model's rate (``inference.fps``) and stores, per sampled frame, the
features the stages take (``Predictor.embed_frames``: backbone, and for PRVQL the channel reduction) and a thumbnail
(the frame resized so its long side is the model's input side, exactly the pixels the model input is made of, so
colour verification stays exact and a result video can be drawn without the original). :func:`locate_memory` answers
a query from it with the track :func:`prvql.infer.locate.locate_video` gives on the video (same features, same
post-processing).

Storage: one HDF5 file (h5py). HDF5 holds chunked, resizable arrays with a per-chunk checksum (Fletcher-32: a corrupt
chunk fails to read instead of being read as features), and its single-writer / multiple-reader mode (SWMR) lets a
reader open a memory while a writer appends to it (a live feed). ``sources`` is written last for every appended
block, so a reader that sees ``n`` sources sees ``n`` complete frames: a consistent prefix. Reads take only the
frames a query needs (chunk = one frame), never the whole file.

Identity: a memory records the model that made it (:func:`model_identity`: a SHA-256 of the feature-relevant config
and of every weight tensor) and the video (path, size, frame rate, frame count, file size and SHA-256); a memory is
refused with one line for another model, and a video given for it must be that video.

Publication and resume: :func:`index_video` writes ``.NAME.partial`` next to the output and renames it when done; a
killed run leaves the partial file, and ``resume=True`` copies its readable frames (a frame whose chunk fails its
checksum ends the prefix) into a fresh file and continues from there.

Storage types: ``float32`` (default: exact), ``float16`` (half the size, approximate), ``int8`` (a quarter, one scale
per frame and channel, approximate); their effect on the tracks is measured by ``python -m benchmarks``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from prvql.config import Config, config_to_dict
from prvql.data.transforms import normalize_image, pad_resize
from prvql.data.video import VideoReader
from prvql.errors import ConfigError, PRVQLError, VideoError
from prvql.paths import check_output_file

if TYPE_CHECKING:
    from prvql.infer.locate import LocatedVideo, Query, VideoInfo
    from prvql.infer.predictor import EmbeddedFrames, Predictor

# The search modules (locate, predictor, outputs and what they import) are imported where they are used, so that a
# process that only writes a memory (a live feed) starts fast.

logger = logging.getLogger(__name__)

FORMAT = "prvql-video-memory"
VERSION = 1
STORAGES = ("float32", "float16", "int8")
_HDF5_TYPES = {"float32": "f4", "float16": "f2", "int8": "i1"}
_COPY_BLOCK = 64  # frames per read when a resumed memory is copied


class MemoryFileError(PRVQLError):
    """A memory file that cannot be used: unreadable, corrupt, or made by another model or from another video."""


_IDENTITIES: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, str]] = weakref.WeakKeyDictionary()


def model_identity(cfg: Config, model: nn.Module) -> str:
    """SHA-256 (hex) of what the stored features depend on: the model config, the frame preparation (pad value,
    released preprocessing), the sampling rate, and every tensor of ``model``'s state (names, dtypes, shapes, bytes).

    The digest is remembered per model object while the settings and every tensor's storage and in-place version
    counter stay the same (a server asking many questions hashes its weights once)."""
    settings = {
        "model": config_to_dict(cfg.model),
        "pad_value": cfg.data.pad_value,
        "released_preprocessing": cfg.data.released_preprocessing,
        "fps": cfg.inference.fps,
    }
    text = json.dumps(settings, sort_keys=True)
    state = sorted(model.state_dict().items())
    stamp = (text, tuple((name, t.data_ptr(), t._version, t.dtype, tuple(t.shape)) for name, t in state))
    known = _IDENTITIES.get(model)
    if known is not None and known[0] == stamp:
        return known[1]
    h = hashlib.sha256(text.encode())
    for name, tensor in state:
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    _IDENTITIES[model] = (stamp, h.hexdigest())
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes; remembered while the file's inode, size and modification time stay the
    same (each question on a memory checks its original video)."""
    st = os.stat(path)
    return _sha256_of(str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_of(path: str, inode: int, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def thumbnails(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N, H, W, 3] -> uint8 [N, h, w, 3]: the frames resized as the model input makes them (long side
    ``size``, antialiased on the CPU), without the padding band: ``pad_resize``'s pixels, exactly."""
    square = pad_resize(np.ascontiguousarray(frames), size, 0.0)  # [N, 3, S, S], inside = uint8 / 255
    height, width = frames.shape[1:3]
    scale = size / max(height, width)
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    top, left = (size - h) // 2, (size - w) // 2
    inside = square[:, :, top : top + h, left : left + w].mul(255).round()
    return inside.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def model_inputs(thumbs: np.ndarray, size: int, pad_value: float) -> Tensor:
    """uint8 [N, h, w, 3] thumbnails (:func:`thumbnails`) -> float [N, 3, S, S] model inputs, bit for bit those of
    ``prepare_frames`` on the CPU (default preprocessing)."""
    resized = torch.from_numpy(thumbs).permute(0, 3, 1, 2).float().div_(255)
    n, _, h, w = resized.shape
    top, left = (size - h) // 2, (size - w) // 2
    out = resized.new_full((n, 3, size, size), pad_value)
    out[:, :, top : top + h, left : left + w] = resized
    return normalize_image(out)


def _open_for_reading(path: Path) -> object:
    """``path`` open for reading: plainly when no writer has it open (a damaged file then fails at once), else in
    SWMR mode (a writer appends to it, or one was killed). Not SWMR first: an SWMR reader retries a damaged file's
    metadata for minutes before it gives up."""
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        if "already open for write" not in str(exc):
            raise
    return h5py.File(path, "r", swmr=True)


def _rows(storage: str) -> tuple[str, ...]:
    """The per-frame arrays of a memory, in writing order (``sources`` last)."""
    return ("features", *(("scales",) if storage == "int8" else ()), "thumbnails", "times", "sources")


def partial_path(path: Path) -> Path:
    """Where :func:`index_video` writes ``path`` until it is complete (readable meanwhile: a live memory)."""
    return path.with_name(f".{path.name}.partial")


@dataclass(frozen=True)
class VideoIdentity:
    """The video a memory was made from (``sha256`` and ``file_size`` empty/0 while it is still being written)."""

    path: str
    width: int
    height: int
    fps: float
    num_frames: int
    file_size: int
    sha256: str

    @classmethod
    def of(cls, path: Path, reader: VideoReader, hashed: bool) -> VideoIdentity:
        """The identity of an open video; ``hashed`` = record its size and SHA-256 too."""
        size, digest = (path.stat().st_size, file_sha256(path)) if hashed else (0, "")
        return cls(str(path.resolve()), reader.width, reader.height, reader.fps, reader.num_frames, size, digest)


class VideoMemory:
    """An open memory file: read frames' features and thumbnails, or (opened by :meth:`create`) append them.

    Use :meth:`open` or :meth:`create`, as a context manager. A reader of a memory that is being written sees the
    frames appended up to its last :meth:`refresh`.

    Attributes:
        path: the file.
        model: :func:`model_identity` of the model that made it.
        video: the video it was made from.
        storage: ``float32``, ``float16`` or ``int8``.
        input_size, pad_value: the model input side and its padding value (to rebuild the model inputs).
        fps: the model's sampling rate.
        complete: the whole video was indexed.
    """

    def __init__(self, file: object, path: Path) -> None:
        self._file = file
        self.path = path
        a = file.attrs
        try:
            if a["format"] != FORMAT:
                raise KeyError("format")
            if int(a["version"]) != VERSION:
                raise MemoryFileError(f"{path}: memory format version {a['version']}, this prvql reads {VERSION}")
            self.model = str(a["model"])
            v = json.loads(a["video"])
            self.video = VideoIdentity(**v)
            self.storage = str(a["storage"])
            self.input_size = int(a["input_size"])
            self.pad_value = float(a["pad_value"])
            self.fps = float(a["fps"])
            self.complete = bool(a["complete"])
            # per-frame arrays in their writing order: ``sources`` last, so its length counts complete frames
            self._data = {key: file[key] for key in _rows(self.storage)}
            self._features, self._thumbs, self._sources = (self._data[k] for k in ("features", "thumbnails", "sources"))
            self._scales = self._data.get("scales")
        except (KeyError, TypeError, ValueError) as exc:
            file.close()
            raise MemoryFileError(f"{path}: not a video memory (missing or malformed {exc})") from None
        except (OSError, RuntimeError) as exc:  # HDF5's own structures fail to read: a cut or damaged file
            file.close()
            raise MemoryFileError(f"{path}: unreadable memory file, truncated or corrupt ({exc})") from None

    # ------------------------------------------------------------------------------------------------------------
    # opening

    @classmethod
    def open(cls, path: str | Path, append: bool = False) -> VideoMemory:
        """Open a memory for reading (also one still being written: see :meth:`refresh`), or with ``append`` (a
        file closed cleanly) for appending while others read it.

        Raises:
            MemoryFileError: a missing, truncated or corrupt file, or not a memory.
        """
        import h5py

        path = Path(path)
        if not path.is_file():
            raise MemoryFileError(f"{path}: no such memory file")
        try:
            if append:
                file = h5py.File(path, "a", libver="latest")
                file.swmr_mode = True
            else:
                file = _open_for_reading(path)
        except OSError as exc:
            raise MemoryFileError(f"{path}: unreadable memory file, truncated or corrupt ({exc})") from None
        return cls(file, path)

    @classmethod
    def create(
        cls,
        path: str | Path,
        cfg: Config,
        model: str,
        video: VideoIdentity,
        feature_shape: tuple[int, ...],
        *,
        thumbnail_size: tuple[int, int],
        storage: str = "float32",
    ) -> VideoMemory:
        """Create an empty memory at ``path`` (replacing any file there), open for appending by this process and
        for reading by others.

        Args:
            cfg: the model's config (input size, pad value, sampling rate).
            model: :func:`model_identity` of the model.
            video: the video.
            feature_shape: (C, h, w) of one frame's features.
            thumbnail_size: (h, w) of a thumbnail (:func:`thumbnails`).
            storage: one of :data:`STORAGES`.
        """
        import h5py

        th, tw = thumbnail_size
        file = h5py.File(path, "w", libver="latest")
        a = file.attrs
        a.update(
            format=FORMAT,
            version=VERSION,
            model=model,
            video=json.dumps(video.__dict__),
            storage=storage,
            input_size=cfg.model.input_size,
            pad_value=cfg.data.pad_value,
            fps=float(cfg.inference.fps),
            complete=False,
        )
        rows = {
            "features": (feature_shape, _HDF5_TYPES[storage]),
            "thumbnails": ((th, tw, 3), "u1"),
            **({"scales": ((feature_shape[0],), "f4")} if storage == "int8" else {}),
        }
        for key, (shape, dtype) in rows.items():  # one chunk per frame, each with a checksum
            file.create_dataset(key, (0, *shape), dtype, maxshape=(None, *shape), chunks=(1, *shape), fletcher32=True)
        for key in ("times", "sources"):
            file.create_dataset(
                key, (0,), "f8" if key == "times" else "i8", maxshape=(None,), chunks=(1024,), fletcher32=True
            )
        file.swmr_mode = True
        return cls(file, Path(path))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> VideoMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------------------
    # reading

    def refresh(self) -> None:
        """See the frames a writer appended since the memory was opened (or last refreshed)."""
        import h5py

        if self._file.id.get_intent() & h5py.h5f.ACC_SWMR_READ:  # opened while a writer had it
            for d in reversed(self._data.values()):  # sources first: the others have at least as many rows
                d.refresh()

    def __len__(self) -> int:
        """Frames stored (a consistent prefix while a writer appends)."""
        return int(self._sources.shape[0])

    @property
    def sources(self) -> tuple[int, ...]:
        """Source-video frame index of every stored frame."""
        return tuple(int(s) for s in self._guard(lambda: self._sources[:], "sources"))

    def times(self, start: int, end: int) -> np.ndarray:
        """float64 [end - start] time (seconds, in the source video) of stored frames ``start .. end - 1``."""
        return self._guard(lambda: self._data["times"][start:end], "times")

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """(C, h, w) of one frame's features."""
        return tuple(self._features.shape[1:])

    def info(self) -> VideoInfo:
        """The video as :func:`prvql.infer.locate.parse_query` checks queries against (the stored frames only)."""
        from prvql.infer.locate import VideoInfo

        sources = self.sources
        num_frames = self.video.num_frames if self.complete else (sources[-1] + 1 if sources else 0)
        times = tuple(self.times(0, len(sources)).tolist())
        return VideoInfo(num_frames, self.video.fps, self.video.width, self.video.height, sources, times)

    def features(self, start: int, end: int) -> Tensor:
        """float32 [end - start, C, h, w] features of stored frames ``start .. end - 1``."""
        stored = self._guard(lambda: self._features[start:end], "features")
        feats = torch.from_numpy(stored.astype(np.float32, copy=False))
        if self._scales is not None:
            feats *= torch.from_numpy(self._guard(lambda: self._scales[start:end], "scales"))[:, :, None, None]
        return feats

    def thumbnails(self, start: int, end: int) -> np.ndarray:
        """uint8 [end - start, h, w, 3] thumbnails of stored frames ``start .. end - 1`` (:func:`thumbnails`)."""
        return self._guard(lambda: self._thumbs[start:end], "thumbnails")

    def frames(self, start: int, end: int) -> Iterator[np.ndarray]:
        """uint8 [H, W, 3] frames ``start .. end - 1`` at the video's size, upscaled from the thumbnails (to draw
        results on when the original video is gone)."""
        import cv2

        for k in range(start, end):
            thumb = self.thumbnails(k, k + 1)[0]
            yield cv2.resize(thumb, (self.video.width, self.video.height), interpolation=cv2.INTER_LINEAR)

    def embedded(self, released_preprocessing: bool = False) -> EmbeddedFrames:
        """The stored frames as the predictor takes them (model inputs rebuilt from the thumbnails)."""
        from prvql.infer.predictor import EmbeddedFrames

        def read(start: int, end: int, with_inputs: bool) -> tuple[Tensor, Tensor | None]:
            if with_inputs and released_preprocessing:
                raise ConfigError(
                    "inference.verification: a memory rebuilds the default preprocessing's model inputs only "
                    "(data.released_preprocessing is on); search the video instead"
                )
            inputs = model_inputs(self.thumbnails(start, end), self.input_size, self.pad_value) if with_inputs else None
            return self.features(start, end), inputs

        return EmbeddedFrames(len(self), (self.video.height, self.video.width), read)

    def _guard(self, read: Callable[[], np.ndarray], what: str) -> np.ndarray:
        try:
            return read()
        except (OSError, RuntimeError) as exc:  # a chunk failed its checksum, or the file was cut short
            raise MemoryFileError(
                f"{self.path}: {what}: corrupt or truncated memory ({exc}); index the video again"
            ) from None

    # ------------------------------------------------------------------------------------------------------------
    # checks

    def check_model(self, identity: str) -> None:
        """Refuse a model other than the one that made the memory (``identity``: :func:`model_identity`)."""
        if identity != self.model:
            raise MemoryFileError(
                f"{self.path}: made with another model or config; index the video again with this one", field="memory"
            )

    def check_video(self, video: Path) -> None:
        """Refuse a video other than the one the memory was made from (size and content, when recorded)."""
        v = self.video
        try:
            with VideoReader(video) as reader:
                same = (reader.width, reader.height, reader.fps) == (v.width, v.height, v.fps)
            if same and v.sha256:
                same = video.stat().st_size == v.file_size and file_sha256(video) == v.sha256
        except VideoError:
            same = False
        if not same:
            raise MemoryFileError(f"{video}: not the video {self.path.name} was made from ({v.path})", field="video")

    # ------------------------------------------------------------------------------------------------------------
    # writing

    def append(self, features: Tensor, thumbs: np.ndarray, sources: list[int], times: list[float]) -> None:
        """Append frames: features [n, C, h, w], thumbnails uint8 [n, h', w', 3], their source frame indices [n] and
        times in seconds [n]. Readers see them once ``sources`` grows (written last)."""
        values = features.detach().float().cpu().numpy()
        rows = {"features": values, "thumbnails": thumbs, "times": np.asarray(times), "sources": np.asarray(sources)}
        if self.storage == "int8":
            scales = np.abs(values).max(axis=(2, 3)) / 127  # [n, C]
            scales[scales == 0] = 1
            rows["features"] = np.clip(np.round(values / scales[:, :, None, None]), -127, 127)
            rows["scales"] = scales
        self._write(rows)

    def _write(self, rows: dict[str, np.ndarray]) -> None:
        """Append stored rows (as stored: no requantisation), one array after the other, ``sources`` last."""
        start = len(self)
        for key, dataset in self._data.items():
            dataset.resize(start + len(rows[key]), axis=0)
            dataset[start:] = rows[key]
            dataset.flush()


@dataclass(frozen=True)
class IndexResult:
    """What :func:`index_video` did: the memory written, frames stored (``added`` of them by this run)."""

    path: Path
    frames: int
    added: int
    seconds: float


def index_video(
    cfg: Config,
    model: nn.Module,
    device: torch.device,
    video: str | Path,
    output: str | Path,
    *,
    storage: str = "float32",
    resume: bool = False,
    follow: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> IndexResult:
    """Embed every frame of ``video`` sampled at ``cfg.inference.fps`` into a memory file ``output``.

    Args:
        cfg, model, device: the trained model (``load_inference_model``).
        video: the video file.
        output: the memory file; written as ``.NAME.partial`` beside it (readable meanwhile) and renamed when done.
        storage: one of :data:`STORAGES`.
        resume: continue the partial file a killed run left (same model and video), else start again.
        follow: the video is still being written: keep indexing as it grows, and stop once it has not grown for
            ``follow`` seconds.
        progress: ``progress(frames stored, frames to store)``, after each block of frames.

    Raises:
        PRVQLError: bad storage, an unreadable video, an unwritable output, or (``resume``) a partial file made by
            another model or from another video.
    """
    from prvql.infer.locate import VideoInfo
    from prvql.infer.predictor import build_predictor

    started = time.perf_counter()
    if storage not in STORAGES:
        raise PRVQLError(f"must be one of {', '.join(STORAGES)} (got {storage!r})", field="storage")
    if follow is not None and not follow > 0:
        raise PRVQLError(f"must be > 0 seconds (got {follow})", field="follow")
    output, video = check_output_file(output, "output"), Path(video)
    fps = float(cfg.inference.fps)
    with VideoReader(video) as reader:
        VideoInfo.of(reader, fps)
        identity = VideoIdentity.of(video, reader, hashed=follow is None)
    predictor = build_predictor(cfg, model, device)
    model_id = model_identity(cfg, model)
    partial = partial_path(output)
    if resume and output.exists() and not partial.exists():
        with VideoMemory.open(output) as done:
            done.check_model(model_id)
            done.check_video(video)
            if done.complete:
                return IndexResult(output, len(done), 0, time.perf_counter() - started)
    memory = _resumed(partial, model_id, identity) if resume and partial.exists() else None
    try:
        if memory is None:
            memory = _created(partial, cfg, predictor, model_id, identity, storage, video)
        before = len(memory)
        _fill(memory, predictor, video, fps, cfg.inference.windows_per_batch * cfg.model.num_frames, follow, progress)
        stored = len(memory)
    finally:
        memory.close()
    _publish(partial, output, video)
    return IndexResult(output, stored, stored - before, time.perf_counter() - started)


def _created(
    path: Path, cfg: Config, predictor: Predictor, model_id: str, identity: VideoIdentity, storage: str, video: Path
) -> VideoMemory:
    """A fresh memory at ``path``, sized from the first frame's features and thumbnail."""
    with VideoReader(video) as reader:
        first = reader.read([0])
    feats, _ = predictor.embed_frames(first)
    shape = thumbnails(first, cfg.model.input_size).shape[1:3]
    return VideoMemory.create(
        path, cfg, model_id, identity, tuple(feats.shape[1:]), storage=storage, thumbnail_size=shape
    )


def _resumed(partial: Path, model_id: str, identity: VideoIdentity) -> VideoMemory | None:
    """The readable prefix of a killed run's ``partial`` file, copied into a fresh file that replaces it; None (start
    again, with a warning) when nothing of it is readable.

    Raises:
        MemoryFileError: it was made by another model or from another video.
    """
    try:
        old = VideoMemory.open(partial)
    except MemoryFileError as exc:
        logger.warning("%s; indexing from the start", exc)
        return None
    with old:
        old.check_model(model_id)
        ov = old.video
        if (ov.path, ov.width, ov.height, ov.fps, ov.sha256) != (
            identity.path, identity.width, identity.height, identity.fps, identity.sha256,
        ):  # fmt: skip
            raise MemoryFileError(f"{partial}: begun from another video ({ov.path}); index without resuming")
        readable = 0
        while readable < len(old):
            try:
                old.features(readable, min(readable + _COPY_BLOCK, len(old)))
                old.thumbnails(readable, min(readable + _COPY_BLOCK, len(old)))
            except MemoryFileError:
                break
            readable = min(readable + _COPY_BLOCK, len(old))
        tmp = partial.with_name(partial.name + ".copy")
        new = VideoMemory.create(
            tmp, _config_of(old), model_id, identity, old.feature_shape, storage=old.storage,
            thumbnail_size=old._thumbs.shape[1:3],
        )  # fmt: skip
        for s in range(0, readable, _COPY_BLOCK):
            new._write({key: d[s : min(s + _COPY_BLOCK, readable)] for key, d in old._data.items()})
    new.close()
    os.replace(tmp, partial)
    logger.info("%s: resuming after %d stored frames", partial, readable)
    return VideoMemory.open(partial, append=True)


def _config_of(memory: VideoMemory) -> Config:
    """A config carrying what :meth:`VideoMemory.create` reads (input size, pad value, sampling rate)."""
    cfg = Config()
    cfg.model.input_size, cfg.data.pad_value, cfg.inference.fps = memory.input_size, memory.pad_value, memory.fps
    return cfg


def _fill(
    memory: VideoMemory,
    predictor: Predictor,
    video: Path,
    fps: float,
    block: int,
    follow: float | None,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Embed and append the sampled frames of ``video`` after those ``memory`` holds; with ``follow``, again each
    time the file grows, until it has not grown for ``follow`` seconds."""
    while True:
        stamp = _stamp(video)
        with VideoReader(video) as reader:
            if (reader.width, reader.height) != (memory.video.width, memory.video.height):
                raise VideoError(f"{video}: the frame size changed while it was indexed")
            total = len(reader.resample(fps))
            pending = islice(reader.iter_resampled(fps), len(memory), None)
            if progress is not None:
                progress(len(memory), total)
            while batch := list(islice(pending, block)):
                frames = np.stack([f for _, f in batch])
                feats, _ = predictor.embed_frames(frames)
                sources = [s for s, _ in batch]
                memory.append(feats, thumbnails(frames, memory.input_size), sources, [reader.times[i] for i in sources])
                if progress is not None:
                    progress(len(memory), total)
        if follow is None or not _grew(video, stamp, follow):
            return


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _grew(path: Path, stamp: tuple[int, int], wait: float) -> bool:
    """Whether ``path`` changes within ``wait`` seconds of ``stamp`` (polled every 0.2 s) and then reads as a
    video."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if _stamp(path) != stamp:
            time.sleep(0.2)  # let the writer finish its burst
            try:
                VideoReader(path).close()
                return True
            except VideoError:
                stamp = _stamp(path)  # not readable yet (a container still being written): keep waiting
        time.sleep(0.2)
    return False


def _publish(partial: Path, output: Path, video: Path) -> None:
    """Mark the memory complete (with the final video's size and hash) and rename it to ``output``."""
    import h5py

    with VideoReader(video) as reader, h5py.File(partial, "a", libver="latest") as file:
        identity = VideoIdentity.of(video, reader, hashed=True)
        file.attrs["video"] = json.dumps(identity.__dict__)
        file.attrs["complete"] = True
    os.replace(partial, output)


def open_memory(path: str | Path) -> VideoMemory:
    """The memory at ``path``, or the one being written there (``.NAME.partial``: a live memory, searched as far
    as it goes)."""
    path = Path(path)
    live = partial_path(path)
    if not path.exists() and live.exists():
        logger.info("%s is still being written: searching the frames stored so far", path)
        return VideoMemory.open(live)
    return VideoMemory.open(path)


def locate_memory(
    cfg: Config,
    model: nn.Module,
    device: torch.device,
    memory: VideoMemory,
    query: Query,
    out_dir: Path,
    *,
    name: str,
    video: Path | None = None,
    render_video: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
) -> LocatedVideo:
    """:func:`prvql.infer.locate.locate_video` on a memory: the same track, without running the backbone on the
    video's frames.

    Args:
        cfg, model, device: the model that made the memory (checked).
        memory: the memory (:meth:`VideoMemory.open`).
        query: what to look for; a box query reads its frame from the original video, or from the thumbnails (an
            approximation: the crop is cut from a smaller picture) when the original is gone.
        out_dir, name, render_video, progress: as in ``locate_video``.
        video: the original video (checked against the memory); None = the path recorded in the memory, if the file
            is still there.

    Raises:
        PRVQLError: another model, another video, a corrupt memory, or a query that does not fit.
    """
    from prvql.data.images import read_image
    from prvql.infer.geometric import check_settings
    from prvql.infer.locate import locate, parse_query, verify_judge_write
    from prvql.infer.postprocess import build_postprocessor
    from prvql.infer.predictor import build_predictor

    check_settings(cfg.inference.geometric)
    memory.check_model(model_identity(cfg, model))
    original = video
    if original is None and Path(memory.video.path).is_file():
        original = Path(memory.video.path)
    if original is not None:
        memory.check_video(original)
    info = memory.info()
    query, searched = parse_query(info, query.frame, query.search, query.box, query.crop)
    with contextlib.ExitStack() as stack:
        reader = None if original is None else stack.enter_context(VideoReader(original))
        if query.crop is not None:
            crop_frame, query_info = read_image(query.crop, "query image"), {"image": query.crop.name}
        else:
            crop_frame, time = _query_frame(memory, info.sources, query.frame, reader)
            query_info = {"frame": query.frame, "time": time, "box": list(query.box)}
        query_info["search"] = query.search
        result = locate(
            build_predictor(cfg, model, device),
            build_postprocessor(cfg.inference),
            memory.embedded(cfg.data.released_preprocessing),
            crop_frame,
            query.box,
            num_frames=searched,
            progress=None if progress is None else lambda done, total: progress("search", done, total),
        )

        def frames(indices: list[int]) -> list[np.ndarray]:  # searched frames: the original's, else thumbnails
            if reader is not None:
                return list(reader.read([info.sources[i] for i in indices]))
            return [next(memory.frames(i, i + 1)) for i in indices]

        rendered = None
        if render_video:
            rendered = (f for _, f in reader.iter_resampled(memory.fps)) if reader else memory.frames(0, len(result))
        return verify_judge_write(
            cfg,
            result,
            info,
            frames,
            rendered,
            out_dir,
            fps=memory.fps,
            name=name,
            query_info=query_info,
            show_query_frame=query.crop is None,
            progress=progress,
        )


def _query_frame(
    memory: VideoMemory, sources: tuple[int, ...], frame: int, reader: VideoReader | None
) -> tuple[np.ndarray, float]:
    """uint8 [H, W, 3] source frame ``frame`` and its time (s): from the original video when there is one, else
    from the thumbnails (the frame must be a sampled one)."""
    if reader is not None:
        return reader.read([frame])[0], reader.times[frame]
    if frame not in sources:
        raise PRVQLError(
            f"the original video {memory.video.path} is gone and frame {frame} is not a sampled frame "
            f"(sampled: {', '.join(map(str, sources[:4]))}, ...)",
            field="frame",
        )
    k = sources.index(frame)
    return next(memory.frames(k, k + 1)), float(memory.times(k, k + 1)[0])
