"""The web UI's workspace: every path a page sends is resolved (`..`, symlinks) and must lie inside one root folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tunesmith.errors import TunesmithError

PACKAGE = Path(__file__).resolve().parents[1]
# tunesmith's own bundled data (the demo datasets and benchmark): readable from any root, never written.
BUNDLED = (PACKAGE / "demo_data", PACKAGE / "evaluate" / "demo_benchmark")
# Keys naming a folder the run writes into (strictly inside the root); `cache_dir` is where downloads land.
WRITE_KEYS = ("output_dir", "save_dir", "export_dir", "tokenized_path", "cache_dir", "ray_storage_path")
# Keys naming something the run reads: a local path, never outside the root.
READ_KEYS = ("dataset_dir", "task_dir", "resume_from_checkpoint")
# Keys that are a local folder or a Hugging Face hub id (org/name).
MODEL_KEYS = ("model_name_or_path", "adapter_name_or_path", "ref_model", "reward_model")
DATASET_KEYS = ("dataset", "eval_dataset")
CONFIG_SUFFIXES = (".yaml", ".yml")
HUB_PART = re.compile(r"[A-Za-z0-9][\w.-]*")
LOOPBACK = ("127.0.0.1", "::1", "localhost")


class WorkspaceError(TunesmithError):
    """A page asked for a path outside the web UI's workspace root, or for something the server does not allow."""


def _names(value) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(item).strip() for item in value if str(item).strip()]
    return [item.strip() for item in str(value).split(",") if item.strip()]


class Workspace:
    """The root folder the web UI may read and write in, and whether it may run code shipped with models."""

    def __init__(self, root: str | Path = ".", trust_remote_code: bool = False):
        self.root = Path(root).expanduser().resolve()
        self.trust_remote_code = trust_remote_code
        if not self.root.is_dir():
            raise WorkspaceError(f"web UI root {root} is not a folder; give --root an existing folder")

    def path(self, value, key: str, write: bool = False) -> Path:
        """The resolved path (relative values are relative to the root); outside the root -> WorkspaceError.
        Reading is also allowed in tunesmith's bundled demo data; writing needs a folder strictly inside the root."""
        text = str(value).strip()
        try:
            raw = Path(text).expanduser()
            full = (raw if raw.is_absolute() else self.root / raw).resolve()
        except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte, an unknown ~user
            raise WorkspaceError(f"`{key}`: {text!r} is not a usable path ({exc})") from None
        inside = full.is_relative_to(self.root) and not (write and full == self.root)
        bundled = not write and any(full.is_relative_to(folder) for folder in BUNDLED)
        if not (inside or bundled):
            where = "the root itself" if full == self.root else f"outside it ({full})"
            raise WorkspaceError(f"`{key}`: {text} is {where}; the web UI only {'writes' if write else 'reads'} "
                                 f"inside its workspace {self.root} (start it with --root DIR for another folder)")
        return full

    def config_path(self, value, key: str = "config path") -> Path:
        """A YAML file the page saves, loads or runs: inside the root and named *.yaml or *.yml."""
        path = self.path(value, key, write=True)
        if path.suffix.lower() not in CONFIG_SUFFIXES:
            raise WorkspaceError(f"`{key}`: {value} is not a .yaml or .yml file; the web UI only writes and reads "
                                 "YAML configs")
        return path

    def is_hub_id(self, text: str) -> bool:
        """`org/name` that is no local path (under the root or the server's folder): a model on the hub."""
        parts = text.split("/")
        return (len(parts) == 2 and all(HUB_PART.fullmatch(part) for part in parts)
                and not os.path.lexists(self.root / text) and not os.path.lexists(text))

    def model(self, value, key: str) -> str:
        """A hub id as it is (nothing is read for it), else the resolved local folder inside the root."""
        text = str(value).strip()
        return text if self.is_hub_id(text) else str(self.path(text, key))

    def confine(self, config: dict) -> dict:
        """A copy of config with every local path resolved and checked; trust_remote_code only if the server allows
        it. Raises WorkspaceError naming the key. Datasets named in dataset_info.json keep their names; their files
        (and the registry itself) are checked too."""
        if config.get("trust_remote_code") and not self.trust_remote_code:
            raise WorkspaceError("`trust_remote_code` is refused: it runs code shipped with a model or dataset, and "
                                 "this web UI was started without --trust-remote-code; untick it, or restart the "
                                 "server with `tunesmith webui --trust-remote-code` if you trust every model it loads")
        self._local_only(config)
        out = dict(config)
        for key in WRITE_KEYS:
            if out.get(key):
                out[key] = str(self.path(out[key], key, write=True))
        for key in READ_KEYS:
            value = out.get(key)
            if key == "resume_from_checkpoint" and str(value).lower() in ("true", "false", "none"):
                continue  # true: the newest checkpoint in output_dir, already confined
            if value:
                out[key] = str(self.path(value, key))
        for key in MODEL_KEYS:
            if not out.get(key):
                continue
            if key == "adapter_name_or_path":
                out[key] = ",".join(self.model(name, key) for name in _names(out[key]))
            else:
                out[key] = self.model(out[key], key)
        if out.get("task"):
            self._benchmark(out)
        if any(out.get(key) for key in DATASET_KEYS):
            self._datasets(out)
        return out

    @staticmethod
    def _local_only(config: dict) -> None:
        """Runs from the page stay on this machine: joining other nodes or a Ray cluster lets them send code here
        (torch's rendezvous and Ray's client unpickle what they receive); such runs are for the CLI."""
        remote = []
        if str(config.get("nnodes") or 1) != "1" or str(config.get("node_rank") or 0) != "0":
            remote.append(f"nnodes {config.get('nnodes', 1)} / node_rank {config.get('node_rank', 0)}")
        if config.get("master_addr") and str(config["master_addr"]) not in LOOPBACK:
            remote.append(f"master_addr {config['master_addr']}")
        if config.get("ray_address"):
            remote.append(f"ray_address {config['ray_address']}")
        if remote:
            raise WorkspaceError(f"{', '.join(remote)}: the web UI only runs jobs on this machine (other nodes and "
                                 "Ray clusters could send code to it); start multi-node or Ray-cluster runs with "
                                 "`tunesmith train CONFIG` instead")

    def _benchmark(self, config: dict) -> None:
        from tunesmith.evaluate.benchmark import parse_task

        task_dir = config.get("task_dir") or str(self.path("evaluation", "task_dir"))
        name, _ = parse_task(str(config["task"]))
        self.path(Path(task_dir) / name, "task")

    def dataset_dir(self, config: dict) -> Path:
        """The config's dataset_dir (default `data`), its dataset_info.json included, checked to be inside."""
        from tunesmith.data.registry import REGISTRY_FILE

        dataset_dir = self.path(config.get("dataset_dir") or "data", "dataset_dir")
        if os.path.lexists(dataset_dir / REGISTRY_FILE):
            self.path(dataset_dir / REGISTRY_FILE, "dataset_dir")
        return dataset_dir

    def _datasets(self, config: dict) -> None:
        from tunesmith.data.registry import REGISTRY_FILE, read_registry, resolve_datasets
        from tunesmith.errors import DataError

        dataset_dir = self.dataset_dir(config)
        config["dataset_dir"] = str(dataset_dir)
        registered = {}
        if (dataset_dir / REGISTRY_FILE).is_file():
            try:
                registered = read_registry(dataset_dir)
            except DataError:
                registered = {}  # the names that need it report the problem below
        for key in DATASET_KEYS:
            if not config.get(key):
                continue
            names = []
            for name in _names(config[key]):
                local = [p for p in (self.root / Path(name).expanduser(), dataset_dir / name) if os.path.lexists(p)]
                if name not in registered and (local or Path(name).expanduser().is_absolute()):
                    name = str(self.path(local[0] if local else name, key))
                names.append(name)
            for spec in resolve_datasets(names, dataset_dir):
                if spec.load_from in ("file", "script"):
                    self.path(spec.location, f"{key} '{spec.name}'")
                    for file in spec.local_paths():
                        self.path(file, f"{key} '{spec.name}'")
            config[key] = ",".join(names)
