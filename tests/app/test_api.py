"""`prvql app`'s HTTP API without a browser: results equal `prvql locate`'s, bad input, cancel, queue, isolation."""

from __future__ import annotations

import io
import json
import threading
import time
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


def moving_square(path: Path, num_frames: int) -> Path:
    """A bright square moving over blocky noise, 10 fps."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (num_frames, HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8).repeat(8, 1).repeat(8, 2)
    for i, frame in enumerate(frames):
        x = 10 + 2 * (i % 30)
        frame[20:40, x : x + 20] = 255
    write_video(path, frames, fps=FPS)
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


def same_result(app_report: dict, cli_report: dict) -> None:
    for key in ("searched_frames", "source_fps", "model_fps", "width", "height", "track", "curve"):
        assert app_report[key] == cli_report[key], key


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
    assert status["state"] == CANCELLED and status["phase"] == "search" and status["done"] < 600
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
