"""How `prvql app` behaves while it searches: page latency during a job, how soon progress shows, and what the
upload's video memory saves a second question.

Makes a 640x360 30 fps clip of --seconds (default 2 minutes; or takes --video), starts ``prvql app`` (the shipped
demo model) as a subprocess, uploads the clip (a format the browser cannot play, e.g. an AVI, waits for its H.264
preview and prints how long it took), asks at once for "last seen before the last frame" (every 5 fps frame is
searched; the job waits for the memory the app indexes right after the upload, then searches it) and, while the job
runs, requests the page, the settings, the job's status and a frame preview every --every seconds. Then asks a
second question (another box, same upload), and once the server has stopped, asks it of the video itself
(``locate_video``, what `prvql locate --video` runs). Prints the time to the first progress report, the indexing
and search rates, the latency of each request (median, 95th percentile, max), and the first vs the second Locate's
time, and the second's against the video's.

    python benchmarks/bench_app.py [--video clip.mp4] [--seconds 60] [--device cpu] [--port 7871]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, FPS = 640, 360, 30.0
SECOND_BOX = [WIDTH // 4, 140, WIDTH // 4 + 80, 220]


def make_clip(path: Path, seconds: float) -> None:
    """A 640x360 clip of ``seconds``: blocky noise that changes every second, a bright square moving across."""
    from prvql.data.video import write_video

    rng = np.random.default_rng(0)

    def frames():
        for i in range(int(FPS * seconds)):
            if i % int(FPS) == 0:
                background = rng.integers(0, 256, (HEIGHT // 20, WIDTH // 20, 3), dtype=np.uint8)
                background = background.repeat(20, 0).repeat(20, 1)
            frame = background.copy()
            x = int((i * 3) % (WIDTH - 80))
            frame[140:220, x : x + 80] = 255
            yield frame

    write_video(path, frames(), FPS, preset="ultrafast")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_job(client, video_id: str, query: dict) -> tuple[dict, list[tuple[float, str, int, int]]]:
    """Submit a job and poll it to its end: its final status and (seconds since submitted, phase, done, total)."""
    submitted = time.perf_counter()
    job = client.post(f"/api/videos/{video_id}/jobs", json=query).json()["id"]
    timeline: list[tuple[float, str, int, int]] = []
    while True:
        status = client.get(f"/api/jobs/{job}").json()
        timeline.append((time.perf_counter() - submitted, status["phase"], status["done"], status["total"]))
        if status["state"] not in ("queued", "running"):
            return status, timeline
        time.sleep(0.1)


def measure(args: argparse.Namespace, work: Path) -> tuple[dict, list, dict[str, list[float]], dict, list]:
    """Run the server, the upload, the first job with the probes, the second job; returns the first job's final
    status, its timeline, the latencies, the second job's status and timeline."""
    import httpx

    video = args.video
    if video is None:
        video = work / f"clip_640x360_{args.seconds:g}s.mp4"
        t0 = time.perf_counter()
        make_clip(video, args.seconds)
        print(f"made {video.name} ({video.stat().st_size / 2**20:.1f} MB) in {time.perf_counter() - t0:.1f} s")

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "prvql", "app", "--port", str(args.port), "--device", args.device]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{args.port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            t0 = time.perf_counter()
            while True:
                try:
                    client.get("/")
                    break
                except httpx.TransportError:
                    if server.poll() is not None or time.perf_counter() - t0 > 120:
                        print(server.stdout.read() if server.stdout else "", file=sys.stderr)
                        raise SystemExit("the server did not start") from None
                    time.sleep(0.2)
            print(f"server up in {time.perf_counter() - t0:.1f} s (model loaded)")

            t0 = time.perf_counter()
            info = client.post(f"/api/videos?name={video.name}", content=video.read_bytes()).json()
            print(
                f"upload + open: {time.perf_counter() - t0:.2f} s for {info['num_frames']} frames "
                f"{info['width']}x{info['height']} at {info['fps']:g} fps ({info['searched_frames']} to search)"
            )
            if info["player"]["state"] == "making":  # a format the browser cannot play (AVI, HEVC, ...)
                t0 = time.perf_counter()
                while (player := client.get(f"/api/videos/{info['id']}").json()["player"])["state"] == "making":
                    time.sleep(0.1)
                seconds = time.perf_counter() - t0
                print(
                    f"browser preview (H.264): {player['state']} after {seconds:.1f} s more "
                    f"({player['done'] / seconds:.0f} frames/s) {player['message']}"
                )
            last = info["num_frames"] - 1
            box = [WIDTH // 2 - 40, 140, WIDTH // 2 + 40, 220]
            job = None

            latencies: dict[str, list[float]] = {"page": [], "settings": [], "status": [], "frame preview": []}
            stop = threading.Event()

            def probe() -> None:
                urls = {
                    "page": "/",
                    "settings": "/api/settings",
                    "frame preview": f"/api/videos/{info['id']}/frames/{last // 2}",
                }
                with httpx.Client(base_url=base, timeout=30, cookies=client.cookies) as prober:
                    while not stop.is_set():
                        if job is None:  # the first job's id is not known yet
                            stop.wait(0.01)
                            continue
                        urls["status"] = f"/api/jobs/{job}"
                        for name, url in urls.items():
                            t = time.perf_counter()
                            assert prober.get(url).status_code == 200, url
                            latencies[name].append(time.perf_counter() - t)
                        stop.wait(args.every)

            prober = threading.Thread(target=probe, daemon=True)
            prober.start()
            submitted = time.perf_counter()
            first = client.post(f"/api/videos/{info['id']}/jobs", json={"frame": last, "box": box}).json()
            job = first["id"]
            timeline: list[tuple[float, str, int, int]] = []
            while True:
                status = client.get(f"/api/jobs/{job}").json()
                timeline.append((time.perf_counter() - submitted, status["phase"], status["done"], status["total"]))
                if status["state"] not in ("queued", "running"):
                    break
                time.sleep(0.1)
            stop.set()
            prober.join()
            memory = client.get(f"/api/videos/{info['id']}").json()["memory"]
            print(f"memory: {memory['state']} ({memory['done']} / {memory['total']} frames) {memory['message']}")
            second = run_job(client, info["id"], {"frame": last, "box": SECOND_BOX})
    finally:
        server.terminate()
        server.wait(30)
    video_seconds = locate_on_the_video(video, last, args.device, work / "video")
    return status, timeline, latencies, *second, video_seconds


def locate_on_the_video(video: Path, frame: int, device: str, out: Path) -> float:
    """Seconds of the second question asked of the video itself (what `prvql locate --video` runs: decode, backbone,
    stages, render), in this process once the server has stopped, with the server's thread count."""
    import torch

    from prvql.infer.locate import Query, locate_video
    from prvql.infer.trained_model import load_inference_model, resolve_device

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))  # as `prvql app` on a CPU: all cores but one
    cfg, model = load_inference_model(None, None)
    x1, y1, x2, y2 = SECOND_BOX
    t0 = time.perf_counter()
    locate_video(
        cfg,
        model,
        resolve_device(device),
        video,
        Query(frame=frame, search="before", box=(x1, y1, x2, y2)),
        out,
        name="v",
    )
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, help="clip to search (default: make the 2-minute 640x360 one)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--port", type=int, default=7871)
    parser.add_argument("--seconds", type=float, default=120, help="length of the clip made (default 120)")
    parser.add_argument("--every", type=float, default=0.25, help="seconds between latency probes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prvql-bench-app-") as work:
        status, timeline, latencies, second, second_timeline, video_seconds = measure(args, Path(work))
    for s in (status, second):
        if s["state"] != "done":
            raise SystemExit(f"job {s['state']}: {s['message']}")
    first = next((t for t, phase, done, _ in timeline if done > 0), float("nan"))
    at_1s = max((done for t, phase, done, _ in timeline if t <= 1.0 and phase in ("index", "search")), default=0)
    index_end = max((t for t, phase, _, _ in timeline if phase == "index"), default=0.0)
    search_end = max(t for t, phase, _, _ in timeline if phase == "search")
    render_start = min((t for t, phase, _, _ in timeline if phase == "render"), default=search_end)
    total_search = next(total for _, phase, _, total in timeline if phase == "search")
    end = timeline[-1][0]
    print(f"first progress after {first:.2f} s; frames indexed or searched by 1 s: {at_1s} of {total_search}")
    marks = []
    for mark in (1, 2, 5, 10, 20, 30):
        done = max((d for t, phase, d, _ in timeline if t <= mark and phase in ("index", "search")), default=0)
        marks.append(f"{mark} s: {done}")
    print("progress (frames indexed, then searched) at " + ", ".join(marks))
    print(
        f"waiting for the memory (index): {index_end:.1f} s; search on the memory: {total_search} frames in "
        f"{search_end - index_end:.1f} s; render + write: {end - render_start:.1f} s; job total {end:.1f} s"
    )
    again = second_timeline[-1][0]
    print(
        f"first Locate (right after the upload: waits for the memory) {end:.1f} s (job {status['seconds']:.1f} s); "
        f"second Locate (memory ready) {again:.1f} s (job {second['seconds']:.1f} s): {again / end:.2f}x"
    )
    print(
        f"the second question asked of the video itself (locate_video, no memory): {video_seconds:.1f} s; "
        f"the app's second Locate takes {second['seconds'] / video_seconds:.2f}x of it"
    )
    for name, values in latencies.items():
        print(
            f"latency while the job runs, {name:>13}: median {statistics.median(values) * 1000:6.1f} ms  "
            f"p95 {percentile(values, 95) * 1000:6.1f} ms  max {max(values) * 1000:6.1f} ms  ({len(values)} requests)"
        )
    print(f"cores: {os.cpu_count()}, device {args.device}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
