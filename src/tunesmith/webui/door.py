"""Who may open the web UI: `user:password` credentials (flag, env var, file) and no exposure beyond loopback without."""

from __future__ import annotations

import os
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.webui.workspace import LOOPBACK

AUTH_ENV = "TUNESMITH_WEBUI_AUTH"


class DoorError(TunesmithError):
    """Web UI credentials are malformed, or the UI would be reachable from other machines without them."""


def _pair(text: str, where: str) -> tuple[str, str]:
    user, sep, password = text.strip().partition(":")
    if not sep or not user.strip() or not password:
        problem = "no ':'" if not sep else "an empty user" if not user.strip() else "an empty password"
        raise DoorError(f"{where}: credentials must be user:password (a non-empty user and password); this one has "
                        f"{problem}")
    return user.strip(), password


def read_auth(pairs: list[str] | None = None, auth_file: str | None = None) -> list[tuple[str, str]]:
    """Every (user, password) from --auth values, the lines of --auth-file (blank lines and # comments skipped)
    and $TUNESMITH_WEBUI_AUTH; all of them may log in."""
    out = [_pair(text, "--auth") for text in pairs or []]
    if auth_file:
        path = Path(auth_file)
        if not path.is_file():
            raise DoorError(f"--auth-file {auth_file} not found; give a file with one user:password per line")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                out.append(_pair(line, f"{auth_file} line {number}"))
    if os.environ.get(AUTH_ENV):
        out.append(_pair(os.environ[AUTH_ENV], f"${AUTH_ENV}"))
    return out


def check_exposure(host: str, share: bool, auth: list) -> None:
    """Refuses to listen beyond this machine (another --host, or --share) when no credentials are set."""
    if auth:
        return
    if share or host not in LOOPBACK:
        what = "--share opens a public link" if share else f"--host {host} listens beyond this machine"
        raise DoorError(f"tunesmith webui: {what}, and anyone who reaches the page can train, read and write files "
                        f"in its root; add --auth user:password (or --auth-file FILE, or set ${AUTH_ENV}), or "
                        "listen on 127.0.0.1 only")
