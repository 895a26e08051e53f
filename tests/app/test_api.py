"""`prvql app`'s HTTP API without a browser: results equal `prvql locate`'s, bad input, cancel, queue, isolation."""

from __future__ import annotations

import io
import json
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the app extra is not installed (pip install -e .[app])")
pytest.importorskip("httpx", reason="starlette's TestClient needs httpx")

from starlette.testclient import TestClient  # noqa: E402

from prvql.app.jobs import CANCELLED, DONE, QUEUED, RUNNING, Job, JobQueue  # noqa: E402
from prvql.app.pipeline import LoadedModel  # noqa: E402
from prvql.app.server import create_app  # noqa: E402
from prvql.cli import main  # noqa: E402
from prvql.data.video import VideoReader, write_video  # noqa: E402
from prvql.infer.locate import Query  # noqa: E402

HEIGHT, WIDTH, FPS = 64, 96, 10.0
BOX = [50, 20, 70, 40]  # xyxy on frame 15: the bright square there


def square_frames(num_frames: int) -> np.ndarray:
    """uint8 [N, 64, 96, 3]: a bright square moving over blocky noise."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (num_frames, HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8).repeat(8, 1).repeat(8, 2)
    for i, frame in enumerate(frames):
        x = 10 + 2 * (i % 30)
        frame[20:40, x : x + 20] = 255
    return frames


def moving_square(path: Path, num_frames: int) -> Path:
    """The moving square as H.264 MP4, 10 fps."""
    write_video(path, square_frames(num_frames), fps=FPS)
    return path


def moving_square_avi(path: Path, num_frames: int, b_frames: int = 0) -> Path:
    """The moving square as MPEG-4 Part 2 in AVI (what browsers cannot play), 10 fps."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=int(FPS))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"qscale": "2"}
        stream.codec_context.max_b_frames = b_frames
        for i, frame in enumerate(square_frames(num_frames)):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts = i
            container.mux(stream.encode(picture))
        container.mux(stream.encode(None))
    return path


@pytest.fixture
def video(tmp_path: Path) -> Path:
    return moving_square(tmp_path / "walk.mp4", 20)


@pytest.fixture
def loaded(tiny_weights) -> LoadedModel:
    """The tiny model as ``prvql app`` loads it (the same loader as ``prvql locate``)."""
    import torch

    from prvql.infer.trained_model import load_inference_model

    cfg, model = load_inference_model(None, tiny_weights)
    return LoadedModel(cfg, model, torch.device("cpu"))


@pytest.fixture
def app(loaded: LoadedModel, tmp_path: Path):
    return create_app(loaded, max_upload_bytes=2 * 2**20, keep_seconds=600, workdir=tmp_path)


@pytest.fixture
def client(app):
    with TestClient(app) as c:
        assert c.get("/").status_code == 200  # the page sets the session cookie
        yield c


def upload(client: TestClient, path: Path, name: str | None = None):
    return client.post(f"/api/videos?name={name or path.name}", content=path.read_bytes())


def wait(client: TestClient, job: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/api/jobs/{job}").json()
        if status["state"] not in (QUEUED, RUNNING):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job} did not finish")


def cli_locate(video: Path, weights: Path, out: Path, *query: str) -> dict:
    argv = ["locate", "--video", str(video), *query, "--weights", str(weights), "--output", str(out), "--device", "cpu"]
    assert main(argv) == 0
    return json.loads((out / "track.json").read_text())


def assert_same_json(a: object, b: object, where: str = "") -> None:
    """Two track.json values equal, floats to 1e-4: a job runs on the upload's memory, whose features were embedded
    in other batches than a search of the video embeds them in (float noise, as in tests/infer/test_memory.py)."""
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=1e-4, rel=0), where
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_json(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_json(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def same_result(app_report: dict, cli_report: dict) -> None:
    for key in ("searched_frames", "source_fps", "model_fps", "width", "height", "track", "curve", "verdict"):
        assert_same_json(app_report.get(key), cli_report.get(key), key)


def test_box_before_a_frame_equals_prvql_locate(client: TestClient, video: Path, tiny_weights: Path, tmp_path):
    response = upload(client, video)
    assert response.status_code == 201, response.text
    info = response.json()
    assert (info["num_frames"], info["width"], info["height"], info["searched_frames"]) == (20, WIDTH, HEIGHT, 10)
    vid = info["id"]

    from PIL import Image

    frame = client.get(f"/api/videos/{vid}/frames/15")
    assert frame.headers["content-type"] == "image/jpeg"
    picture = np.asarray(Image.open(io.BytesIO(frame.content)))
    with VideoReader(video) as reader:
        exact, previous = reader.read([15, 14])
    assert picture.shape == exact.shape
    assert np.abs(picture.astype(int) - exact).mean() < 5 < 40 < np.abs(picture.astype(int) - previous).mean()
    assert client.get(f"/api/videos/{vid}/file").content == video.read_bytes()

    started = client.post(f"/api/videos/{vid}/jobs", json={"frame": 15, "box": BOX, "search": "before"})
    assert started.status_code == 202 and started.json()["state"] in (QUEUED, RUNNING)
    status = wait(client, started.json()["id"])
    assert status["state"] == DONE, status
    assert (status["phase"], status["done"], status["total"]) == ("render", 8, 8)  # 8 searched frames drawn
    report = client.get(status["files"]["track.json"]).json()
    assert report["query"] == {"frame": 15, "time": 1.5, "box": [50.0, 20.0, 70.0, 40.0], "search": "before"}

    expected = cli_locate(video, tiny_weights, tmp_path / "cli", "--query-frame", "15", "--query-box", "50,20,20,20")
    same_result(report, expected)
    assert client.get(status["files"]["scores.png"]).content[:8] == b"\x89PNG\r\n\x1a\n"
    mp4 = tmp_path / "app.mp4"
    mp4.write_bytes(client.get(status["files"]["track.mp4"]).content)
    with VideoReader(mp4) as reader:
        assert reader.num_frames == 8 + 1 and (reader.height, reader.width) == (HEIGHT, WIDTH)


def test_crop_anywhere_equals_locate_with_an_image(client: TestClient, video: Path, tiny_weights: Path, tmp_path):
    from PIL import Image

    crop = tmp_path / "mug.png"
    Image.fromarray(np.full((24, 16, 3), 200, np.uint8)).save(crop)
    vid = upload(client, video).json()["id"]
    assert client.put(f"/api/videos/{vid}/crop", content=crop.read_bytes()).json() == {"width": 16, "height": 24}
    started = client.post(f"/api/videos/{vid}/jobs", json={"frame": 0, "crop": True, "search": "anywhere"})
    status = wait(client, started.json()["id"])
    assert status["state"] == DONE, status
    report = client.get(status["files"]["track.json"]).json()
    same_result(report, cli_locate(video, tiny_weights, tmp_path / "cli", "--query", str(crop)))
    assert report["searched_frames"] == 10


def test_bad_uploads_get_one_clear_message(loaded: LoadedModel, video: Path, tmp_path: Path) -> None:
    from PIL import Image

    app = create_app(loaded, max_upload_bytes=4000, workdir=tmp_path)
    with TestClient(app) as client:
        client.get("/")
        too_big = upload(client, video, "holiday.mp4")
        assert too_big.status_code == 413
        assert too_big.json() == {"error": f"holiday.mp4 is {video.stat().st_size / 1024:.1f} kB; the limit is 3.9 kB"}
        text = tmp_path / "notes.txt"
        text.write_text("not a video\n" * 10)
        response = upload(client, text)
        assert response.status_code == 400 and response.json() == {"error": "notes.txt: not a video this app can read"}
        picture = tmp_path / "photo.png"
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(picture)
        response = upload(client, picture)
        assert response.status_code == 400 and response.json()["error"].startswith("photo.png: not a video")
        empty = client.post("/api/videos?name=empty.mp4", content=b"")
        assert empty.status_code == 400 and empty.json() == {"error": "empty.mp4: the file is empty"}
        # nothing of the refused uploads stays on disk
        assert list((app.state.store.root / "videos").iterdir()) == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"frame": 15, "box": [50, 20, 50, 40]}, "box: must have x2 > x1 and y2 > y1 (got [50, 20, 50, 40])"),
        ({"frame": 15, "box": [500, 200, 520, 220]}, "box: [500, 200, 520, 220] lies outside the 96x64 frame"),
        ({"frame": 15, "box": [1, 2, 3]}, "box: expected four finite numbers x1, y1, x2, y2 in pixels (got [1, 2, 3])"),
        ({"frame": 15, "box": "1,2,3,4"}, "box: expected four finite numbers"),
        ({"frame": 15, "box": [1, 2, float("nan"), 4]}, "box: expected four finite numbers"),
        ({"frame": 15}, "box: draw a box around the object (or give a crop image)"),
        ({"frame": 20, "box": BOX}, "frame: must be a frame index in [0, 20) (got 20)"),
        ({"frame": "3", "box": BOX}, "frame: must be a frame index in [0, 20) (got '3')"),
        ({"frame": 0, "box": BOX}, "frame: no frame comes before frame 0"),
        ({"frame": 15, "box": BOX, "search": "later"}, "search: must be one of before, anywhere (got 'later')"),
        ({"frame": 15, "crop": True}, "crop: no crop image was given for this video"),
    ],
)
def test_bad_job_requests_are_refused(client: TestClient, video: Path, fields: dict, message: str) -> None:
    vid = upload(client, video).json()["id"]
    response = client.post(f"/api/videos/{vid}/jobs", content=json.dumps(fields))
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)
    assert list((client.app.state.store.root / "jobs").glob("*")) == []


def test_not_json_and_not_an_image(client: TestClient, video: Path) -> None:
    vid = upload(client, video).json()["id"]
    response = client.post(f"/api/videos/{vid}/jobs", content=b"{frame: 3")
    assert (response.status_code, response.json()) == (400, {"error": "the request is not JSON"})
    response = client.put(f"/api/videos/{vid}/crop", content=b"GIF89a broken")
    assert response.status_code == 400 and response.json()["error"].startswith("the crop is not an image")


def test_cancel_a_running_job(client: TestClient, tmp_path: Path) -> None:
    long_video = moving_square(tmp_path / "long.mp4", 1200)  # 600 frames to search: seconds of work
    vid = upload(client, long_video).json()["id"]
    job = client.post(f"/api/videos/{vid}/jobs", json={"frame": 1199, "box": BOX}).json()["id"]
    deadline = time.monotonic() + 60
    while (status := client.get(f"/api/jobs/{job}").json())["done"] == 0:
        assert time.monotonic() < deadline and status["state"] in (QUEUED, RUNNING)
        time.sleep(0.02)
    assert status["state"] == RUNNING and status["total"] == 600
    client.post(f"/api/jobs/{job}/cancel")
    status = wait(client, job)
    # the job waited for the upload's memory ("index") or searched it
    assert status["state"] == CANCELLED and status["phase"] in ("index", "search") and status["done"] < 600
    assert client.get(f"/api/jobs/{job}/files/track.json").status_code == 409
    folder = client.app.state.store.root / "jobs" / job
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_queue_positions_and_cancel_while_waiting(tmp_path: Path) -> None:
    release = threading.Event()
    ran: list[str] = []

    def runner(job: Job) -> None:
        ran.append(job.id)
        job.report("search", 0, 1)
        release.wait(10)

    queue = JobQueue(runner)
    jobs = [Job(f"j{i}", "me", "v", Query(frame=1, search="before"), tmp_path) for i in range(3)]
    for job in jobs:
        queue.submit(job)
    assert [queue.position(j) for j in jobs] == [1, 2, 3]
    queue.start()
    deadline = time.monotonic() + 10
    while jobs[0].state != RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert [queue.position(j) for j in jobs] == [0, 1, 2]
    queue.cancel(jobs[1])
    assert jobs[1].state == CANCELLED and [queue.position(j) for j in jobs] == [0, 0, 1]
    release.set()
    while jobs[2].state != DONE:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    queue.stop()
    assert ran == ["j0", "j2"] and jobs[0].state == DONE


def test_sessions_do_not_see_each_other(client: TestClient, app, video: Path) -> None:
    vid = upload(client, video).json()["id"]
    job = client.post(f"/api/videos/{vid}/jobs", json={"frame": 15, "box": BOX}).json()["id"]
    assert wait(client, job)["state"] == DONE
    other = TestClient(app)
    assert other.get("/").status_code == 200
    for url in (
        f"/api/videos/{vid}",
        f"/api/videos/{vid}/file",
        f"/api/videos/{vid}/frames/3",
        f"/api/jobs/{job}",
        f"/api/jobs/{job}/files/track.json",
    ):
        assert other.get(url).status_code == 404, url
        assert client.get(url).status_code == 200, url
    assert other.post(f"/api/jobs/{job}/cancel").status_code == 404
    no_cookie = TestClient(app).get(f"/api/videos/{vid}")
    assert no_cookie.json() == {"error": "no session: open the page first (it sets a cookie)"}
    for name in ("..%2F..%2Fvideos", "query.png", "video.mp4"):
        assert client.get(f"/api/jobs/{job}/files/{name}").status_code == 404


def test_old_uploads_and_jobs_are_removed(client: TestClient, app, video: Path) -> None:
    vid = upload(client, video).json()["id"]
    job = client.post(f"/api/videos/{vid}/jobs", json={"frame": 15, "box": BOX}).json()["id"]
    assert wait(client, job)["state"] == DONE
    store = app.state.store
    assert store.cleanup() == 0
    assert store.cleanup(time.time() + store.keep_seconds + 1) == 2
    assert list((store.root / "videos").iterdir()) == [] and list((store.root / "jobs").iterdir()) == []
    assert client.get(f"/api/jobs/{job}").status_code == 404
    assert client.get(f"/api/videos/{vid}").json()["error"].startswith("no such video")


def test_app_command_refuses_a_taken_port_before_loading_the_model(capsys) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["app", "--port", str(port), "--weights", "nowhere.safetensors"]) == 2
    assert capsys.readouterr().err.strip().startswith(f"prvql: error: --port: cannot listen on 127.0.0.1:{port} (")
    assert main(["app", "--port", "70000"]) == 2
    assert capsys.readouterr().err.strip() == "prvql: error: --port: must be in [1, 65535] (got 70000)"


def wait_preview(client: TestClient, vid: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while (player := client.get(f"/api/videos/{vid}").json()["player"])["state"] == "making":
        assert time.monotonic() < deadline, "the preview was not made"
        assert 0 <= player["done"] <= player["total"]
        time.sleep(0.05)
    return player


def test_a_video_the_browser_cannot_play_gets_a_preview(client: TestClient, tiny_weights: Path, tmp_path: Path):
    avi = moving_square_avi(tmp_path / "Holiday clip.avi", 30, b_frames=2)
    info = upload(client, avi).json()
    assert info["name"] == "Holiday clip.avi" and info["player"]["state"] in ("making", "ready")
    assert info["player"]["total"] == 30 and (info["num_frames"], info["width"], info["height"]) == (30, WIDTH, HEIGHT)
    vid = info["id"]
    player = wait_preview(client, vid)
    assert player == {"state": "ready", "done": 30, "total": 30, "message": "", "url": f"/api/videos/{vid}/preview"}
    response = client.get(player["url"])
    assert response.headers["content-type"] == "video/mp4"
    preview = tmp_path / "preview.mp4"
    preview.write_bytes(response.content)
    from PIL import Image

    with VideoReader(avi) as source, VideoReader(preview) as played:
        assert (played.num_frames, played.fps, played.width, played.height) == (30, FPS, WIDTH, HEIGHT)
        for i in (0, 7, 16, 29):  # frame i of the preview is frame i of the reader the search uses
            exact, shown = source.read([i])[0].astype(int), played.read([i])[0].astype(int)
            other = source.read([i - 1 if i else 1])[0]  # every frame has its own noise: neighbours differ a lot
            assert np.abs(shown - exact).mean() < 15 < 40 < np.abs(shown - other).mean()
            jpeg = np.asarray(Image.open(io.BytesIO(client.get(f"/api/videos/{vid}/frames/{i}").content)))
            assert np.abs(jpeg.astype(int) - exact).mean() < 3

    job = client.post(f"/api/videos/{vid}/jobs", json={"frame": 25, "box": BOX}).json()["id"]
    status = wait(client, job)
    assert status["state"] == DONE, status
    report = client.get(status["files"]["track.json"]).json()
    expected = cli_locate(avi, tiny_weights, tmp_path / "cli", "--query-frame", "25", "--query-box", "50,20,20,20")
    same_result(report, expected)
    assert report["video"] == "Holiday clip.avi"


def variable_rate_mp4(path: Path, num_frames: int) -> Path:
    """H.264 MP4 of the moving square: its first half at 5 frames a second, the rest at 20."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=int(FPS))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, frame in enumerate(square_frames(num_frames)):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            half = num_frames // 2
            picture.pts = 200 * i if i < half else 200 * half + 50 * (i - half)
            picture.time_base = Fraction(1, 1000)
            container.mux(stream.encode(picture))
        container.mux(stream.encode(None))
    return path


def test_a_video_the_browser_plays_is_played_as_it_is(client: TestClient, video: Path, tmp_path: Path) -> None:
    vfr = variable_rate_mp4(tmp_path / "phone.mp4", 20)
    with VideoReader(vfr) as reader:
        assert not reader.constant_rate and reader.num_frames == 20
        times = list(reader.times)
    sent = upload(client, vfr).json()
    assert sent["frame_times"] == pytest.approx(times) and sent["frame_times"][11] - sent["frame_times"][
        10
    ] == pytest.approx(0.05)
    assert wait_preview(client, sent["id"])["state"] == "ready"  # the player maps time to frames

    info = upload(client, video).json()
    assert info["frame_times"] is None  # a constant rate: frame / fps
    assert info["player"] == {
        "state": "original",
        "done": 0,
        "total": 0,
        "message": "",
        "url": f"/api/videos/{info['id']}/file",
    }
    assert client.get(f"/api/videos/{info['id']}/preview").status_code == 409
    assert not (client.app.state.store.root / "videos" / info["id"] / "preview.mp4").exists()


def test_errors_name_the_uploaded_file_never_a_server_path(client: TestClient, video: Path, monkeypatch) -> None:
    from prvql.app import server
    from prvql.errors import VideoError

    vid = upload(client, video, "Grand Café.mp4").json()["id"]
    root = str(client.app.state.store.root)

    def broken_read(self, indices, size=None):
        raise VideoError(f"{self.path}: frame {indices[0]} could not be decoded (got 12 instead)")

    monkeypatch.setattr(VideoReader, "read", broken_read)
    response = client.get(f"/api/videos/{vid}/frames/11")
    assert response.status_code == 400
    assert response.json() == {"error": "Grand Café.mp4: frame 11 could not be decoded (got 12 instead)"}
    monkeypatch.undo()

    for failure in (VideoError, OSError):

        def failing_locate(cfg, model, device, video, query, out_dir, failure=failure, **kwargs):
            raise failure(f"{video}: cannot decode frame 7 (see {out_dir / 'track.json'})")

        def failing_memory(cfg, model, device, memory, query, out_dir, *, video, failing_locate=failing_locate, **kw):
            failing_locate(cfg, model, device, video, query, out_dir)

        monkeypatch.setattr(server, "locate_video", failing_locate)
        monkeypatch.setattr(server, "locate_memory", failing_memory)
        job = client.post(f"/api/videos/{vid}/jobs", json={"frame": 15, "box": BOX}).json()["id"]
        status = wait(client, job)
        assert status["state"] == "failed" and root not in status["message"], status
        assert status["message"].endswith("Grand Café.mp4: cannot decode frame 7 (see (a file of the server))")

    def failing_index(cfg, model, device, video, output, **kwargs):
        raise VideoError(f"{video}: cannot decode frame 3 (writing {output})")

    monkeypatch.setattr(server, "index_video", failing_index)
    vid = upload(client, video, "Grand Café.mp4").json()["id"]
    assert wait_memory(client, vid)["message"] == (
        "no memory: VideoError: Grand Café.mp4: cannot decode frame 3 (writing (a file of the server))"
    )


def test_the_page_has_a_favicon(client: TestClient) -> None:
    for url in ("/favicon.ico", "/favicon.svg"):
        response = client.get(url)
        assert response.status_code == 200 and response.headers["content-type"].startswith("image/svg+xml")
        assert response.text.lstrip().startswith("<svg")
    assert 'rel="icon"' in client.get("/").text


def wait_memory(client: TestClient, vid: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        memory = client.get(f"/api/videos/{vid}").json()["memory"]
        if memory["state"] != "making":
            return memory
        time.sleep(0.05)
    raise AssertionError(f"the memory of {vid} was not made")


def test_locates_run_on_the_memory_indexed_once_after_the_upload(
    client: TestClient, video: Path, tiny_weights: Path, tmp_path: Path, monkeypatch
) -> None:
    from PIL import Image

    from prvql.infer.predictor import Predictor

    embedded = []  # frames per call of the backbone on video frames
    real_embed = Predictor.embed_frames
    monkeypatch.setattr(
        Predictor, "embed_frames", lambda self, frames: (embedded.append(len(frames)), real_embed(self, frames))[1]
    )
    info = upload(client, video).json()
    vid = info["id"]
    assert info["memory"]["state"] in ("making", "ready")
    assert wait_memory(client, vid) == {"state": "ready", "done": 10, "total": 10, "message": ""}
    assert sum(embedded) >= 10  # the 10 sampled frames, embedded by the indexing
    folder = client.app.state.store.root / "videos" / vid
    assert (folder / "memory.h5").is_file()

    crop = tmp_path / "mug.png"
    Image.fromarray(np.full((24, 16, 3), 200, np.uint8)).save(crop)
    client.put(f"/api/videos/{vid}/crop", content=crop.read_bytes())
    embedded.clear()
    box = wait(client, client.post(f"/api/videos/{vid}/jobs", json={"frame": 15, "box": BOX}).json()["id"])
    image = wait(
        client,
        client.post(f"/api/videos/{vid}/jobs", json={"frame": 0, "crop": True, "search": "anywhere"}).json()["id"],
    )
    assert box["state"] == image["state"] == DONE, (box, image)
    assert embedded == []  # neither Locate ran the backbone on the video's frames
    expected = [
        cli_locate(video, tiny_weights, tmp_path / "a", "--query-frame", "15", "--query-box", "50,20,20,20"),
        cli_locate(video, tiny_weights, tmp_path / "b", "--query", str(crop)),
    ]
    assert embedded  # (the counter counts: `prvql locate --video` embeds the frames)
    for status, cli in zip((box, image), expected, strict=True):
        report = client.get(status["files"]["track.json"]).json()
        assert report["track"]["frames"] and report["verdict"] in ("found", "not_found")
        same_result(report, cli)


def test_an_expired_upload_stops_its_indexing_and_loses_its_memory(client: TestClient, tmp_path: Path) -> None:
    store = client.app.state.store
    vid = upload(client, moving_square(tmp_path / "long.mp4", 1200)).json()["id"]
    up = store.upload(client.cookies.get("prvql_session"), vid)
    deadline = time.monotonic() + 60
    while up.memory.done == 0:  # indexing has begun
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert store.cleanup(now=time.time() + 10_000) == 1
    assert up._memory_ended.is_set() and up.memory.state == "making" and up.memory.done < 600
    assert not up.folder.exists()
