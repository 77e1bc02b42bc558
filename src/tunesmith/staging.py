"""Write-to-staging-then-rename: a folder appears complete or not at all (exports, caches, models, final saves)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def new_staging(final: Path) -> Path:
    """An empty folder next to `final` (same file system, so publishing is a rename), unique to this call."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the published folder should be an ordinary one
    return staging


def publish(staging: Path, final: Path, *, replace: bool) -> None:
    """Makes the finished `staging` folder `final` in one rename. An existing `final` is replaced only when `replace`
    (it is moved aside first and put back if the rename fails); otherwise OSError unless it is an empty folder."""
    if not (final.exists() and replace):
        os.replace(staging, final)  # also replaces an empty folder
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    os.replace(final, trash / final.name)
    try:
        os.replace(staging, final)
    except BaseException:
        os.replace(trash / final.name, final)  # put the old folder back
        raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def publish_entries(staging: Path, folder: Path) -> None:
    """Moves each entry of `staging` into `folder`, replacing the entry of the same name (the folder's other files,
    such as checkpoints, stay), then removes `staging`."""
    for item in staging.iterdir():
        target = folder / item.name
        if target.is_dir():
            shutil.rmtree(target)
        item.replace(target)
    staging.rmdir()
