"""How `prvql app` behaves while it searches: page latency during a job, and how soon progress shows.

Makes a 2-minute 640x360 30 fps clip (or takes --video), starts ``prvql app`` (the shipped demo model) as a
subprocess, uploads the clip, asks for "last seen before the last frame" (every 5 fps frame is searched) and, while
the job runs, requests the page, the settings, the job's status and a frame preview every --every seconds. Prints
the time to the first progress report, the progress after 1 s, the search and render rates and the latency of each
request (median, 95th percentile, max).

    python benchmarks/bench_app.py [--video clip.mp4] [--device cpu] [--port 7871]
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

WIDTH, HEIGHT, FPS, SECONDS = 640, 360, 30.0, 120


def make_clip(path: Path) -> None:
    """A 2-minute 640x360 clip: blocky noise that changes every second, a bright square moving across."""
    from prvql.data.video import write_video

    rng = np.random.default_rng(0)

    def frames():
        for i in range(int(FPS * SECONDS)):
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


def measure(args: argparse.Namespace, work: Path) -> tuple[dict, list, dict[str, list[float]]]:
    """Run the server, the upload, the job and the probes; returns the final status, the timeline, the latencies."""
    import httpx

    video = args.video
    if video is None:
        video = work / "clip_640x360_2min.mp4"
        t0 = time.perf_counter()
        make_clip(video)
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
            last = info["num_frames"] - 1
            box = [WIDTH // 2 - 40, 140, WIDTH // 2 + 40, 220]
            submitted = time.perf_counter()
            job = client.post(f"/api/videos/{info['id']}/jobs", json={"frame": last, "box": box}).json()["id"]

            latencies: dict[str, list[float]] = {"page": [], "settings": [], "status": [], "frame preview": []}
            stop = threading.Event()

            def probe() -> None:
                urls = {
                    "page": "/",
                    "settings": "/api/settings",
                    "status": f"/api/jobs/{job}",
                    "frame preview": f"/api/videos/{info['id']}/frames/{last // 2}",
                }
                with httpx.Client(base_url=base, timeout=30, cookies=client.cookies) as prober:
                    while not stop.is_set():
                        for name, url in urls.items():
                            t = time.perf_counter()
                            assert prober.get(url).status_code == 200, url
                            latencies[name].append(time.perf_counter() - t)
                        stop.wait(args.every)

            prober = threading.Thread(target=probe, daemon=True)
            prober.start()
            timeline: list[tuple[float, str, int, int]] = []
            while True:
                status = client.get(f"/api/jobs/{job}").json()
                timeline.append((time.perf_counter() - submitted, status["phase"], status["done"], status["total"]))
                if status["state"] not in ("queued", "running"):
                    break
                time.sleep(0.1)
            stop.set()
            prober.join()
    finally:
        server.terminate()
        server.wait(30)

    return status, timeline, latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, help="clip to search (default: make the 2-minute 640x360 one)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--port", type=int, default=7871)
    parser.add_argument("--every", type=float, default=0.25, help="seconds between latency probes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prvql-bench-app-") as work:
        status, timeline, latencies = measure(args, Path(work))
    if status["state"] != "done":
        raise SystemExit(f"job {status['state']}: {status['message']}")
    first = next((t for t, phase, done, _ in timeline if done > 0), float("nan"))
    at_1s = max((done for t, phase, done, _ in timeline if t <= 1.0 and phase == "search"), default=0)
    search_end = max(t for t, phase, _, _ in timeline if phase == "search")
    render_start = min((t for t, phase, _, _ in timeline if phase == "render"), default=search_end)
    total_search = next(total for _, phase, _, total in timeline if phase == "search")
    end = timeline[-1][0]
    print(f"first progress after {first:.2f} s; frames searched by 1 s: {at_1s} of {total_search}")
    marks = []
    for mark in (1, 2, 5, 10, 20, 30):
        done = max((d for t, phase, d, _ in timeline if t <= mark and phase == "search"), default=0)
        marks.append(f"{mark} s: {done}")
    print("progress (frames handed to the model) at " + ", ".join(marks))
    print(
        f"search: {total_search} frames in {search_end:.1f} s ({total_search / search_end:.1f} frames/s); "
        f"render + write: {end - render_start:.1f} s; job total {end:.1f} s"
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
