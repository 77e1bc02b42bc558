"""Runs `tunesmith train` on a Ray cluster: Ray Train starts the workers, each runs the same training code."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from tunesmith.errors import ConfigError, DependencyError

log = logging.getLogger(__name__)


def _worker(loop_config: dict) -> None:
    """One Ray worker: Ray has set up the torch.distributed environment; train exactly as the CLI does."""
    import os

    from tunesmith.config.load import load_config
    from tunesmith.train.run import run_training

    # Ray starts workers in a session folder of its own; relative paths in the config mean the driver's folder
    # (on a multi-node cluster that folder must be on a shared filesystem, as the outputs are).
    if Path(loop_config["cwd"]).is_dir():
        os.chdir(loop_config["cwd"])
    run_training(load_config(None, loop_config["config"]))


def wants_ray(config) -> bool:
    """Whether `tunesmith train` runs on Ray: as in LLaMA-Factory, only when asked for (`use_ray: true`, or its
    USE_RAY=1 environment variable); ray_num_workers alone (LLaMA-Factory's default is 1) never starts Ray."""
    import os

    from tunesmith.train.workers import under_launcher

    if under_launcher():
        return False
    asked = config.launch.use_ray or os.environ.get("USE_RAY", "0").lower() in ("true", "y", "1")  # LF's reading
    if not asked and config.launch.ray_num_workers != 1:
        log.warning("ray_num_workers: %d is not used: Ray trains only with use_ray: true (or USE_RAY=1), as in "
                    "LLaMA-Factory", config.launch.ray_num_workers)
    return asked


def _ray_init_kwargs(launch) -> dict:
    """LLaMA-Factory's ray_init_kwargs (a mapping, or JSON text), with ray_address as `address` when given."""
    import json

    kwargs = launch.ray_init_kwargs or {}
    if isinstance(kwargs, str):
        try:
            kwargs = json.loads(kwargs)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"ray_init_kwargs is not a JSON mapping: {exc}") from None
    if not isinstance(kwargs, dict):
        raise ConfigError(f"ray_init_kwargs must be a mapping of ray.init arguments, got {kwargs!r}")
    kwargs = {"include_dashboard": False, "log_to_driver": True, **kwargs}
    if launch.ray_address:
        kwargs["address"] = launch.ray_address
    return kwargs


def _check_local_resources(workers: int, resources: dict, use_gpu: bool) -> None:
    """On a local Ray cluster, asking for more CPUs or GPUs than the machine has makes Ray wait forever: refuse."""
    import os

    have = {"CPU": os.cpu_count() or 1}
    if use_gpu or "GPU" in resources:
        import torch

        have["GPU"] = torch.cuda.device_count()
    for kind, count in resources.items():
        need = workers * float(count)
        if kind in have and need > have[kind]:
            raise ConfigError(
                f"ray_num_workers: {workers} x resources_per_worker {kind}: {count} needs {need:g} {kind}s, but this "
                f"machine has {have[kind]}; use fewer workers, or join a cluster with ray_address")


def run_on_ray(config) -> int:
    if importlib.util.find_spec("ray") is None:
        raise DependencyError("use_ray needs Ray Train: pip install 'tunesmith[ray]' (ray[train])")
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from tunesmith.device import detect_device

    launch = config.launch
    use_gpu = detect_device() == "cuda"
    resources = launch.resources_per_worker or ({"GPU": 1} if use_gpu else {"CPU": 1})
    storage = Path(launch.ray_storage_path or "saves").resolve()
    values = {key: value for key, value in config.given.items()
              if key not in ("use_ray", "ray_num_workers", "ray_storage_path", "ray_address", "resources_per_worker",
                             "ray_init_kwargs")}
    init_kwargs = _ray_init_kwargs(launch)
    if not init_kwargs.get("address"):
        _check_local_resources(launch.ray_num_workers, resources, use_gpu)
    if not ray.is_initialized():
        ray.init(**init_kwargs)
    try:
        trainer = TorchTrainer(
            _worker, train_loop_config={"config": values, "cwd": str(Path.cwd())},
            scaling_config=ScalingConfig(num_workers=launch.ray_num_workers, use_gpu=use_gpu,
                                         resources_per_worker=resources),
            run_config=RunConfig(storage_path=str(storage), name="tunesmith"),
        )
        result = trainer.fit()
    finally:
        ray.shutdown()
    if result.error:
        raise result.error
    log.info("Ray Train finished with %d workers", launch.ray_num_workers)
    return 0
