"""Runs `tunesmith train`/`eval` in a subprocess for the web UI; reads its progress (trainer_log.jsonl), memory use
and results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path


class CliJob:
    """One CLI subprocess (`tunesmith JOB CONFIG`): the same command and YAML a user would run; output to a log."""

    def __init__(self, config_path: Path, output_dir: Path, job: str = "train", cwd: Path | None = None):
        self.config_path, self.output_dir, self.job, self.cwd = Path(config_path), Path(output_dir), job, cwd
        self.log_path = self.config_path.with_suffix(".log")
        self.process = None
        self.aborted = False

    def start(self) -> None:
        log = self.log_path.open("w", encoding="utf-8")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "tunesmith", self.job, str(self.config_path)],
                                        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                        cwd=self.cwd)

    def started(self) -> CliJob:
        """Starts the process and returns the job: a page publishes a job only once its process exists, so a timer's
        poll running beside the click never sees it "idle" (before its process) and takes it for ended."""
        self.start()
        return self

    def abort(self) -> None:
        if self.running():
            self.aborted = True
            os.killpg(self.process.pid, signal.SIGINT)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def status(self) -> str:
        """idle, running, done, failed or aborted."""
        if self.process is None:
            return "idle"
        code = self.process.poll()
        if code is None:
            return "running"
        if self.aborted:
            return "aborted"
        return "done" if code == 0 else "failed"

    def memory(self) -> dict[str, int]:
        """Bytes the job's processes (it and its children: torchrun workers, dataloaders) hold now: `ram` (resident
        memory) and, on a machine with NVIDIA GPUs, `gpu` (their memory on every GPU, from nvidia-smi)."""
        import psutil

        if not self.running():
            return {}
        try:
            root = psutil.Process(self.process.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            return {}
        ram, pids = 0, set()
        for process in processes:
            try:
                ram += process.memory_info().rss
                pids.add(process.pid)
            except psutil.Error:
                continue  # it ended meanwhile
        out = {"ram": ram}
        gpu = _gpu_memory(pids)
        if gpu is not None:
            out["gpu"] = gpu
        return out

    def failure(self) -> str:
        """The CLI's one-line error (the last line of its log) once the run failed; empty otherwise."""
        return self.log_tail(1) if self.status() == "failed" else ""

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.is_file():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace").replace("\r", "\n")
        return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def _gpu_memory(pids: set[int]) -> int | None:
    """GPU memory in bytes used by these processes (nvidia-smi's per-process table); None without nvidia-smi."""
    import shutil

    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    total = 0
    for line in done.stdout.splitlines():
        pid, _, mib = line.partition(",")
        if pid.strip().isdigit() and int(pid) in pids and mib.strip().isdigit():
            total += int(mib) * 2**20
    return total


def format_bytes(value: int) -> str:
    return f"{value / 2**30:.1f} GiB" if value >= 2**30 else f"{value / 2**20:.0f} MiB"


def read_progress(output_dir: Path) -> dict:
    """Latest step, total, percentage, elapsed and remaining seconds, tokens per second (when the run counts its
    tokens: include_num_input_tokens_seen), and the (step, loss) points so far."""
    path = Path(output_dir) / "trainer_log.jsonl"
    records = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line being written right now
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
    last = records[-1] if records else {}
    speed = last.get("train_tokens_per_second")
    if speed is None and last.get("num_input_tokens_seen") and last.get("elapsed"):
        speed = last["num_input_tokens_seen"] / last["elapsed"]
    return {"step": last.get("step", 0), "total_steps": last.get("total_steps", 0),
            "percentage": last.get("percentage", 0.0), "elapsed": last.get("elapsed"),
            "remaining": last.get("remaining"), "tokens_per_second": speed, "losses": losses}


def read_eval_results(folder: Path) -> list[tuple[str, float]] | None:
    """(name, value) rows from what `tunesmith eval` wrote in folder: a benchmark's average, categories and
    subjects (results.json), or predict's BLEU/ROUGE (predict_results.json); None before they exist."""
    folder = Path(folder)
    if (folder / "results.json").is_file():
        data = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        rows = [("Average", data["average"]), *data["categories"].items()]
        return rows + [(subject["name"], subject["accuracy"]) for subject in data["subjects"].values()]
    if (folder / "predict_results.json").is_file():
        data = json.loads((folder / "predict_results.json").read_text(encoding="utf-8"))
        return list(data.items())
    return None
