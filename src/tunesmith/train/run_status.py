"""tunesmith_status.json: which process trains in a run folder, and how it stopped (for `tunesmith runs`).

Written by the main process when training begins (status running, its pid and host) and again when run_training
ends: finished, failed (an exception, whose message is kept) or interrupted (Ctrl-C, the web UI's Abort). A kill -9
leaves `running` with a pid that is gone: readers check the pid (`alive`). all_results.json, not this file, is what
tells a finished run (train/checkpoints.finished_step)."""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from pathlib import Path

STATUS_FILE = "tunesmith_status.json"


def _write(path: Path, record: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)  # a reader never sees half a file


def _stdout_file() -> str | None:
    """The file this process's output goes to (the web UI's run log, `> train.log`), when it is one (Linux)."""
    try:
        if stat.S_ISREG(os.fstat(1).st_mode):
            return os.readlink("/proc/self/fd/1")
    except OSError:
        pass
    return None


def started(output_dir: str | Path) -> None:
    """Training begins in output_dir, in this process."""
    record = {"status": "running", "pid": os.getpid(), "host": socket.gethostname(), "started": round(time.time(), 3)}
    log = _stdout_file()
    if log:
        record["log"] = log
    _write(Path(output_dir) / STATUS_FILE, record)


def stopped(output_dir: str | Path | None, since: float, error: BaseException | None = None) -> None:
    """run_training, called at time `since`, returned (error None: finished) or raised `error`. Recorded only when
    this call began training there: a run refused before it began (e.g. a second run on the same folder) leaves the
    folder's record alone."""
    if not output_dir:
        return
    path = Path(output_dir) / STATUS_FILE
    record = read(path.parent)
    if record is None or record.get("pid") != os.getpid() or record.get("host") != socket.gethostname():
        return
    if not isinstance(record.get("started"), (int, float)) or record["started"] < round(since, 3):
        return
    status = "finished" if error is None else "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
    record.update(status=status, stopped=round(time.time(), 3))
    if status == "failed":
        record["error"] = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    try:
        _write(path, record)
    except OSError:
        pass  # a full or read-only disk: the original error matters more


def read(output_dir: str | Path) -> dict | None:
    try:
        record = json.loads((Path(output_dir) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def alive(record: dict) -> bool:
    """The process the record names still runs (on this machine; a record from another host counts as alive)."""
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if record.get("host") != socket.gethostname():
        return True  # cannot be checked from here; readers also look at how recent the folder's files are
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) has stopped training
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
