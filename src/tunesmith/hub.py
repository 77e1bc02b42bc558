"""Whether the Hugging Face hub may be contacted, and whether a name reads as a hub id: no project imports."""

from __future__ import annotations

import os
import re

# Any of these set to 1/ON/YES/TRUE means offline, for models and datasets alike (read at each call, not at import).
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
# "org/name" or "name": anything else that is not a folder is a mistyped local path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def is_offline() -> bool:
    """True when the Hugging Face hub must not be contacted."""
    return any(os.environ.get(key, "").strip().upper() in ("1", "ON", "YES", "TRUE") for key in OFFLINE_VARIABLES)


def looks_like_hub_id(name: str) -> bool:
    """True for "org/name" or "name" (not for ./relative, ~/home or /absolute paths)."""
    return bool(_HUB_ID.match(name)) and not name.startswith((".", "~"))
