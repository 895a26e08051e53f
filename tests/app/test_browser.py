"""`prvql app` in a real browser: Debian's headless Chromium driven by Playwright, against a live uvicorn server.

The page is used as a person would: upload a synthetic episode, type the frame holding the object (no Enter), drag a
box with the mouse, click stray on the picture, press Locate, wait for the answer (the page scrolls to it); the track
must equal `prvql locate`'s on the same video and box, the curve must have its axes, legend and peak, and clicking a
row of the track table must seek the result video. A screenshot is saved (with PRVQL_APP_SCREENSHOT=path it is also
copied there: that is how docs/images/app.png is made). An AVI upload (a format browsers cannot play) must get a
playable preview whose frames follow the player, and a frame that fails to load must clear the picture.

Nothing downloads a browser: the system's Chromium (``apt-get install chromium``; PRVQL_CHROMIUM overrides the path)
is launched by Playwright. Without it the browser test is skipped on a developer machine, and FAILS where CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a real browser and the shipped demo model

IN_CI = os.environ.get("CI", "").lower() == "true"
try:
    import uvicorn
except ImportError:
    if IN_CI:  # in CI the browser test must run: a missing extra is an error, not a skip
        raise
    pytest.skip("the app extra is not installed (pip install -e .[app])", allow_module_level=True)

from prvql.app.pipeline import LoadedModel  # noqa: E402
from prvql.app.server import SESSION_COOKIE, create_app  # noqa: E402
from prvql.cli import main  # noqa: E402
from tests.app.test_api import assert_same_json  # noqa: E402

CHROMIUM = os.environ.get("PRVQL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SEED, FRAMES = 5, 60  # the demo's episode, shortened: the shipped model finds the object (docs/DEMO.md)
VIEWPORT = {"width": 1280, "height": 900}


@pytest.fixture(scope="module")
def episode_video(tmp_path_factory) -> tuple[Path, object]:
    from prvql.data.video import write_video
    from prvql.synth.episode import SynthOptions, make_episode

    episode = make_episode(SEED, SynthOptions(num_frames=FRAMES), pool="heldout")
    path = tmp_path_factory.mktemp("episode") / "kitchen.mp4"
    write_video(path, episode.frames, episode.fps)
    return path, episode


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A live server with the shipped demo model; yields (base URL, app)."""
    import torch

    from prvql.infer.trained_model import load_inference_model

    cfg, model = load_inference_model(None, None)
    app = create_app(LoadedModel(cfg, model, torch.device("cpu")), workdir=tmp_path_factory.mktemp("app"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(30)


@pytest.fixture
def chromium():
    """Playwright's Chromium object, launched from the system executable; skip (or fail in CI) without one."""
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install playwright; the browser comes from apt: chromium)"
    if reason is None and not Path(CHROMIUM).is_file():
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set PRVQL_CHROMIUM)"
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI=true: the browser test cannot be skipped: {reason}")
        pytest.skip(reason)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def drag_box(page, box: tuple[float, float, float, float]) -> None:
    """Drag from (x1, y1) to (x2, y2), in video pixels, over the frame canvas with mouse events."""
    canvas = page.locator("#frame-canvas")
    rect = canvas.bounding_box()
    width = canvas.evaluate("c => c.width")
    scale = rect["width"] / width
    x1, y1, x2, y2 = box
    page.mouse.move(rect["x"] + x1 * scale, rect["y"] + y1 * scale)
    page.mouse.down()
    page.mouse.move(rect["x"] + (x1 + x2) / 2 * scale, rect["y"] + (y1 + y2) / 2 * scale, steps=4)
    page.mouse.move(rect["x"] + x2 * scale, rect["y"] + y2 * scale, steps=4)
    page.mouse.up()


def test_find_an_object_in_the_page(chromium, server, episode_video, tmp_path: Path) -> None:
    url, _ = server
    video, episode = episode_video
    frame = episode.visual_crop_frame  # the object is in view there; "last seen before this frame" is searched
    page = chromium.new_page(viewport=VIEWPORT)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)

    # a wrong file gets one clear message in the page
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list\n" * 20)
    page.set_input_files("#video-file", str(notes))
    page.wait_for_selector("#error", state="visible")
    assert page.inner_text("#error") == "notes.txt: not a video this app can read"

    page.set_input_files("#video-file", str(video))
    page.wait_for_selector(f"#frame-canvas[data-frame='{FRAMES - 1}']")  # the last frame is shown first
    assert "kitchen.mp4: 320x240, 60 frames" in page.inner_text("#video-meta")
    assert page.get_attribute("#preview-text", "data-state") == "original"  # an H.264 MP4 plays as it is
    drag_box(page, (20, 20, 80, 60))
    assert page.inner_text("#box-text").endswith(f"on frame {FRAMES - 1}") and page.is_enabled("#locate")

    # a typed frame number shows its frame without Enter, and clears the box drawn on another frame, saying so
    page.fill("#frame-number", str(frame))
    page.wait_for_selector(f"#frame-canvas[data-frame='{frame}']")
    assert page.is_visible("#box-note") and f"drawn on frame {FRAMES - 1} was cleared" in page.inner_text("#box-note")
    assert page.is_disabled("#locate")
    drag_box(page, episode.visual_crop_box)
    text = page.inner_text("#box-text")  # "box x1, y1, x2, y2 (w x h px) on frame F"
    drawn = [int(v) for v in text.split("(")[0].removeprefix("box ").split(",")]
    assert text.endswith(f"on frame {frame}") and not page.is_visible("#box-note")
    assert max(abs(a - b) for a, b in zip(drawn, episode.visual_crop_box, strict=True)) <= 1.5
    # a click without a drag keeps the box
    rect = page.locator("#frame-canvas").bounding_box()
    page.mouse.click(rect["x"] + rect["width"] * 0.9, rect["y"] + rect["height"] * 0.9)
    assert page.inner_text("#box-text") == text and page.is_enabled("#locate")

    # the page says when the video's memory is ready (indexed once after the upload; searches then use it)
    page.wait_for_selector("#memory-text[data-state='ready']", timeout=120_000)
    assert page.inner_text("#memory-text").startswith("Memory ready")

    page.click("#locate")
    page.wait_for_selector("#result-section", state="visible", timeout=120_000)
    assert page.get_attribute("#job-text", "data-state") == "done" and not errors
    # the page scrolls to the answer (below the fold at 1280x900)
    in_view = (
        "() => { const top = document.getElementById('result-section').getBoundingClientRect().top;"
        " return [window.scrollY, top, window.innerHeight]; }"
    )
    page.wait_for_function(f"() => {{ const [y, top, h] = ({in_view})(); return y > 0 && top >= -2 && top < h / 3; }}")
    report = page.evaluate("() => fetch(document.getElementById('download').href).then(r => r.json())")

    x1, y1, x2, y2 = drawn
    out = tmp_path / "cli"
    argv = [
        "locate",
        "--video",
        str(video),
        "--query-frame",
        str(frame),
        "--query-box",
        f"{x1},{y1},{x2 - x1},{y2 - y1}",
    ]
    assert main([*argv, "--output", str(out), "--device", "cpu", "--no-video"]) == 0
    expected = json.loads((out / "track.json").read_text())
    for key in ("searched_frames", "track", "curve", "verdict", "confidence"):  # the search ran on the memory
        assert_same_json(report[key], expected[key], key)
    # the verdict in words, above the summary and on the curve
    word = "Found" if report["verdict"] == "found" else "Not found"
    verdict = page.inner_text("#verdict")
    assert verdict.startswith(word) and verdict.endswith(f"confidence {report['confidence']:.2f}")
    assert page.locator(f"#curve text.verdict-mark.{report['verdict']}").text_content() == verdict
    track = report["track"]
    assert report["searched_frames"] == frame and track["frames"]
    rows = page.locator("#track-table tbody tr")
    assert rows.count() == len(track["frames"])

    # the curve: labelled axes (video frame / time, score) with ticks, the thresholds and the track in a legend,
    # the peak marked where the post-processing found it
    titles = page.locator("#curve text.axis-title").all_text_contents()
    assert titles == ["video frame / time (s)", "score"]
    ticks = page.locator("#curve text.tick").all_text_contents()
    assert {"0.00", "0.50", "1.00", "0", "0.0 s"} <= set(ticks)  # score ticks; the first frame and its time
    legend = {item.get_attribute("data-kind"): item.inner_text() for item in page.locator("#curve-legend li").all()}
    assert set(legend) == {"score", "peak-threshold", "track-threshold", "track", "peak"}
    assert f"peak threshold {track['peak_threshold']:.3f}" in legend["peak-threshold"]
    assert f"track threshold {track['track_threshold']:.3f}" in legend["track-threshold"]
    peak_frame = report["curve"][track["peak"]]["source_frame"]
    assert f"peak: video frame {peak_frame} " in legend["peak"]
    dashed = page.locator("#curve line.threshold")
    assert dashed.count() == 2
    ys = [float(dashed.nth(i).get_attribute("y1")) for i in range(2)]
    assert (ys[0] < ys[1]) == (track["peak_threshold"] > track["track_threshold"])  # higher score = higher up
    assert page.locator("#curve circle.peak").count() == 1

    # the result video plays in the browser (H.264): its duration is the searched frames plus the query frame
    page.wait_for_function("() => document.getElementById('result-video').readyState >= 1", timeout=20_000)
    duration = page.evaluate("() => document.getElementById('result-video').duration")
    assert duration == pytest.approx((frame + 1) / report["model_fps"], abs=0.25)

    peak = track["peak"]
    page.click(f"#track-table tbody tr[data-frame='{peak}']")
    page.wait_for_function(
        "t => { const v = document.getElementById('result-video');"
        " return !v.seeking && Math.abs(v.currentTime - t) < 0.05; }",
        arg=(peak + 0.5) / report["model_fps"],
        timeout=10_000,
    )
    assert "selected" in page.get_attribute(f"#track-table tbody tr[data-frame='{peak}']", "class")
    screenshot = tmp_path / "app.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("PRVQL_APP_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["PRVQL_APP_SCREENSHOT"])


def mpeg4_avi(path: Path, num_frames: int, fps: int) -> Path:
    """A 160x120 MPEG-4 Part 2 AVI (no browser plays it): frame i has a white bar at x = 4 i over dark grey."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.options = {"qscale": "2"}
        for i in range(num_frames):
            frame = np.full((120, 160, 3), 40, np.uint8)
            frame[:, 4 * i : 4 * i + 4] = 255
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts = i
            container.mux(stream.encode(picture))
        container.mux(stream.encode(None))
    return path


def test_an_avi_gets_a_playable_preview_and_a_failed_frame_clears_the_picture(chromium, server, tmp_path) -> None:
    url, _ = server
    avi = mpeg4_avi(tmp_path / "Camera Roll.avi", 36, 10)
    page = chromium.new_page(viewport=VIEWPORT)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.set_input_files("#video-file", str(avi))
    page.wait_for_selector("#frame-canvas[data-frame='35']")
    page.wait_for_selector("#preview-text[data-state='ready']", timeout=30_000)
    page.wait_for_function("() => document.getElementById('source-video').readyState >= 1", timeout=20_000)
    assert page.evaluate("() => document.getElementById('source-video').duration") == pytest.approx(3.6, abs=0.15)
    assert page.evaluate("() => document.getElementById('source-video').src").endswith("/preview")

    def bar_at(frame: int) -> bool:  # the canvas shows the frame whose white bar is at x = 4 frame
        row = page.evaluate(
            "() => Array.from(document.getElementById('frame-canvas').getContext('2d')"
            ".getImageData(0, 60, 160, 1).data.filter((_, i) => i % 4 === 0))"
        )
        bright = [x for x, v in enumerate(row) if v > 150]
        return bool(bright) and abs(sum(bright) / len(bright) - (4 * frame + 1.5)) < 1.5

    assert bar_at(35)
    # the preview starts at the frame shown (35); moving it shows its frame for drawing: preview frame i is the
    # reader's frame i
    page.wait_for_function(
        "() => { const v = document.getElementById('source-video'); return !v.seeking && v.currentTime > 3.5; }"
    )
    page.evaluate("() => { const v = document.getElementById('source-video'); v.currentTime = 2.05; }")
    page.wait_for_selector("#frame-canvas[data-frame='20']")
    assert bar_at(20)
    drag_box(page, (60, 30, 120, 90))
    assert page.is_enabled("#locate")

    # a frame the server cannot decode: the picture is cleared (never another frame's), the page says why
    message = "Camera Roll.avi: frame 12 could not be decoded (got 13 instead)"
    page.route("**/frames/12", lambda route: route.fulfill(status=400, json={"error": message}))
    page.fill("#frame-number", "12")
    page.wait_for_selector("#error", state="visible")
    assert page.inner_text("#error") == message
    assert page.inner_text("#frame-status") == "Frame 12 could not be loaded; pick another frame."
    assert page.get_attribute("#frame-canvas", "data-frame") == "-1" and not bar_at(20) and not bar_at(12)
    assert page.is_disabled("#locate") and "drawn on frame 20 was cleared" in page.inner_text("#box-note")
    page.fill("#frame-number", "13")
    page.wait_for_selector("#frame-canvas[data-frame='13']")
    assert bar_at(13) and not errors


def test_the_server_survives_a_client_leaving_mid_upload(server) -> None:
    import httpx

    url, app = server
    videos = app.state.store.root / "videos"
    before = set(videos.iterdir()) if videos.is_dir() else set()
    with httpx.Client(base_url=url) as client:
        cookie = client.get("/").cookies[SESSION_COOKIE]
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                f"POST /api/videos?name=big.mp4 HTTP/1.1\r\nHost: {host}\r\nCookie: {SESSION_COOKIE}={cookie}\r\n"
                f"Content-Length: 1000000\r\n\r\n".encode()
                + b"\0" * 50_000
            )
            deadline = time.monotonic() + 10
            while not set(videos.glob("*")) - before:  # the upload has begun
                assert time.monotonic() < deadline
                time.sleep(0.02)
        # the client is gone: its partial upload is removed, and the server answers the next request
        deadline = time.monotonic() + 10
        while set(videos.iterdir()) - before:
            assert time.monotonic() < deadline, "the partial upload was not removed"
            time.sleep(0.05)
        assert client.get("/").status_code == 200 and client.get("/api/settings").json()["model_fps"] == 5.0
