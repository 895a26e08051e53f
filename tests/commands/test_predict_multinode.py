"""`prvql predict` on two "nodes": two torchrun agents on this machine, joined by a c10d rendezvous on localhost.

Each agent is started as it would be on one node of a cluster (``--nnodes 2 --nproc_per_node 1 --rdzv_backend c10d
--rdzv_endpoint HOST:PORT --rdzv_id ID``); gloo on CPU. The merged predictions file must equal the one a single
process writes. Every address is 127.0.0.1, and every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prvql.cli import main

REPO = Path(__file__).resolve().parents[2]
AGENT_TIMEOUT_S = 180  # both agents together; about 20 s on an idle 2-core CPU
RENDEZVOUS_TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dataset(root: Path) -> Path:
    """Three small synthetic clips (two videos) in the official layout; returns the annotation file."""
    from prvql.synth.episode import SynthOptions, write_synthetic_dataset

    opts = SynthOptions(frame_width=128, frame_height=96, num_frames=30, video_backgrounds=0.0)
    report = write_synthetic_dataset(root, 4, seed=0, opts=opts, progress=False, clips_only=True)
    assert not report.failed
    return root / "vq_train.json"  # 3 of the 4 clips: rank 0 searches clips 0 and 2, rank 1 clip 1


TORCHRUN_VARS = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT"}


def _agent_env() -> dict[str, str]:
    """This environment without any inherited torchrun variables; one thread; gloo on the loopback interface."""
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return env


def _run_agents(commands: list[list[str]], logs: list[Path]) -> list[int]:
    """Start every agent in its own process group; kill them all if they are not done within the timeout."""
    procs = []
    try:
        for cmd, log in zip(commands, logs, strict=True):
            with log.open("w") as out:
                procs.append(
                    subprocess.Popen(
                        cmd, cwd=REPO, env=_agent_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
        deadline = time.monotonic() + AGENT_TIMEOUT_S
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        return [p.returncode for p in procs]
    except subprocess.TimeoutExpired:
        pytest.fail(f"torchrun agents still running after {AGENT_TIMEOUT_S} s:\n" + _tails(logs))
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def _tails(logs: list[Path]) -> str:
    return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs if log.exists())


@pytest.mark.slow
def test_two_node_torchrun_predict_equals_one_process(tiny_weights: Path, tmp_path: Path) -> None:
    annotations = _dataset(tmp_path / "data")
    clips = tmp_path / "data" / "clips"
    common = ["--weights", str(tiny_weights), "--annotations", str(annotations), "--clips", str(clips)]
    common += ["--device", "cpu"]

    single = tmp_path / "single" / "pred.json"
    single.parent.mkdir()
    assert main(["predict", *common, "--output", str(single)]) == 0

    merged = tmp_path / "multi" / "pred.json"
    merged.parent.mkdir()
    port = _free_port()
    agent = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "2", "--nproc_per_node", "1",
        "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "prvql-predict-test",
        "--rdzv_conf", f"join_timeout={RENDEZVOUS_TIMEOUT_S}",
        "--local_addr", "127.0.0.1", "--max_restarts", "0",
        "-m", "prvql", "predict", *common, "--output", str(merged),
    ]  # fmt: skip
    logs = [tmp_path / "node0.log", tmp_path / "node1.log"]
    codes = _run_agents([agent, agent], logs)
    assert codes == [0, 0], _tails(logs)

    cache = merged.with_name(merged.name + ".cache")
    assert sorted(p.name for p in cache.glob("done.*.json")) == ["done.0.json", "done.1.json"]  # a world of two
    written = [line for log in logs for line in log.read_text().splitlines() if line.startswith("wrote ")]
    assert len(written) == 1, _tails(logs)  # one process merged

    expected = json.loads(single.read_text())
    tracks = [
        qs["bboxes"]
        for video in expected["results"]["videos"]
        for clip in video["clips"]
        for pred in clip["predictions"]
        for qs in pred["query_sets"].values()
    ]
    assert sum(bool(t) for t in tracks) >= 6  # the comparison is not between empty files
    assert json.loads(merged.read_text()) == expected
