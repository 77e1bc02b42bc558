"""A fork server for tests/reliability/test_resume.py: runs the tunesmith CLI in child processes and SIGKILLs a
child at an exact point of its run (kill -9 mid-step, mid-checkpoint, mid-final-save).

    python killpoint.py      reads one JSON request a line on stdin, answers one JSON line on stdout:
    {"argv": [...], "out": OUTPUT_DIR, "events": EVENTS_FILE, "log": LOG_FILE, "kill": LABEL or null}
    -> {"returncode": N}  (-9 when the child was killed)

It imports torch/transformers/tunesmith once and forks a child per run (a run then costs seconds, not the imports);
it runs no torch op itself, so forking is safe. The child's stdout and stderr go to LOG_FILE. Every write into
OUTPUT_DIR, and every training step, is an event whose label the child appends to EVENTS_FILE before it happens;
the child dies at the first event labelled LABEL, in the middle of it where it has a middle:
  step:N           before training step N
  open:PATH        just after PATH was opened for writing (a "w" file is then empty)
  save:PATH        torch.save / safetensors save_file: half the file's bytes written
  move:PATH        before PATH is renamed
  rmtree:PATH      half of the folder's files deleted
PATH is relative to OUTPUT_DIR; other paths are not events.
"""

import builtins
import importlib
import io
import json
import os
import shutil
import signal
import sys
import traceback

RUN = {"out": None, "events": None, "kill": None}  # the current child's run; the server's stays empty


def inside(path) -> str | None:
    if RUN["out"] is None or not isinstance(path, (str, os.PathLike)):
        return None
    path = os.path.abspath(os.fspath(path))
    return os.path.relpath(path, RUN["out"]) if path.startswith(RUN["out"] + os.sep) else None


def event(label: str) -> bool:
    """Records the event; True when it is the one to die in."""
    os.write(RUN["events"], (label + "\n").encode())
    return label == RUN["kill"]


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install_hooks() -> None:
    """Wraps the writing functions before anything imports them (peft binds safetensors' save_file at import)."""
    real_open = builtins.open

    def write_half(path, data: bytes) -> None:
        with real_open(path, "wb") as handle:
            handle.write(data[: len(data) // 2])

    def hooked_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        rel = inside(file)
        if rel and any(flag in mode for flag in "wax+") and event(f"open:{rel}"):
            die()
        return handle

    builtins.open = io.open = hooked_open

    import torch

    real_save = torch.save

    def hooked_save(obj, f, *args, **kwargs):
        rel = inside(f)
        if rel and event(f"save:{rel}"):
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            write_half(f, buffer.getvalue())
            die()
        return real_save(obj, f, *args, **kwargs)

    torch.save = hooked_save

    import safetensors.torch

    real_save_file = safetensors.torch.save_file

    def hooked_save_file(tensors, filename, metadata=None):
        rel = inside(filename)
        if rel and event(f"save:{rel}"):
            write_half(filename, safetensors.torch.save(tensors, metadata=metadata))
            die()
        return real_save_file(tensors, filename, metadata=metadata)

    safetensors.torch.save_file = hooked_save_file

    def hooked_move(real):
        def move(src, dst, *args, **kwargs):
            rel = inside(src)
            if rel and event(f"move:{rel}"):
                die()
            return real(src, dst, *args, **kwargs)

        return move

    os.replace, os.rename = hooked_move(os.replace), hooked_move(os.rename)

    real_rmtree = shutil.rmtree

    def hooked_rmtree(path, *args, **kwargs):
        rel = inside(path)
        if rel and event(f"rmtree:{rel}"):
            files = sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names)
            for name in files[: len(files) // 2]:
                os.unlink(name)
            die()
        return real_rmtree(path, *args, **kwargs)

    shutil.rmtree = hooked_rmtree

    import transformers

    real_step = transformers.Trainer.training_step

    def hooked_step(self, *args, **kwargs):
        if RUN["out"] and event(f"step:{self.state.global_step + 1}"):
            die()
        return real_step(self, *args, **kwargs)

    transformers.Trainer.training_step = hooked_step


def child(request: dict) -> int:
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 1)
    os.dup2(log, 2)
    RUN.update(out=os.path.abspath(request["out"]), kill=request.get("kill"),
               events=os.open(request["events"], os.O_WRONLY | os.O_CREAT | os.O_APPEND))
    from tunesmith.cli import main

    try:
        return main(request["argv"])
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else 1
    except BaseException:
        traceback.print_exc()
        return 1


def serve() -> None:
    install_hooks()
    for name in ("tunesmith.cli", "tunesmith.train.run", "tunesmith.train.callbacks", "tunesmith.data.pipeline",
                 "tunesmith.model.load", "peft", "datasets"):  # the imports every child would otherwise repeat
        importlib.import_module(name)

    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = child(request)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(json.dumps({"returncode": code}), flush=True)


if __name__ == "__main__":
    serve()
