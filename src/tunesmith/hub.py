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


def is_cached(name: str, revision: str | None = None, cache_dir: str | None = None) -> bool:
    """True when the hub cache already holds this model's config.json (so it loads without the network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name, "config.json", cache_dir=cache_dir, revision=revision)
    return isinstance(found, str)


def hub_problem(name: str, revision: str | None = None, token: str | None = None, timeout: float = 10.0) -> str:
    """One request to the hub for a model id: "" when it is there, else why not (unreachable, missing, gated).

    transformers would otherwise retry every file five times, once for the tokenizer and once for the model,
    which took a minute before its error; this asks once, without retries, and answers in seconds."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        HfApi().model_info(name, revision=revision, token=token, timeout=timeout)
    except GatedRepoError:
        return f"'{name}' is gated on the Hugging Face hub: accept its licence on its page and set hf_hub_token"
    except RevisionNotFoundError:
        return f"'{name}' has no revision '{revision}' on the Hugging Face hub (model_revision)"
    except RepositoryNotFoundError:
        return (
            f"no model '{name}' on the Hugging Face hub (or it is private: set hf_hub_token); "
            "check the id, or point model_name_or_path at a local folder"
        )
    except HfHubHTTPError as exc:
        return f"the Hugging Face hub answered {exc}"
    except Exception as exc:  # the HTTP client's connection errors (httpx or httpx2, by huggingface_hub version)
        if isinstance(exc, OSError) or any(cls.__name__ == "TransportError" for cls in type(exc).__mro__):
            return f"the Hugging Face hub ({constants.ENDPOINT}) cannot be reached ({type(exc).__name__}: {exc})"
        raise
    return ""
