"""What a run reports and when it stops early: SwanLab, the torch profiler, extra metrics (LLaMA-Factory's keys)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tunesmith.config.schema_base import Group


class ReportArgs(Group):
    """LLaMA-Factory's logging, profiling and early-stopping keys."""

    early_stopping_steps: int | None = Field(
        None,
        ge=1,
        description="Stop after this many evaluations without improvement (transformers' EarlyStoppingCallback).",
    )
    include_effective_tokens_per_second: bool = Field(False, description="Report trained tokens per second.")
    use_swanlab: bool = Field(False, description="Log to SwanLab.")
    swanlab_project: str | None = Field("llamafactory", description="SwanLab project.")
    swanlab_workspace: str | None = Field(None, description="SwanLab workspace.")
    swanlab_run_name: str | None = Field(None, description="SwanLab run name.")
    swanlab_mode: Literal["cloud", "local", "offline", "disabled"] = Field(
        "cloud", description="SwanLab mode: cloud (needs swanlab_api_key and network), local, offline or disabled."
    )
    swanlab_api_key: str | None = Field(None, description="SwanLab API key.")
    swanlab_logdir: str | None = Field(None, description="SwanLab log folder.")
    swanlab_lark_webhook_url: str | None = Field(None, description="SwanLab Lark webhook.")
    swanlab_lark_secret: str | None = Field(None, description="SwanLab Lark secret.")
    enable_torch_profiler: bool = Field(False, description="Record torch profiler traces.")
    profiler_output_dir: str | None = Field(None, description="Profiler traces folder (default output_dir/profiler).")
    profiler_wait_steps: int = Field(1, ge=0, description="Profiler: steps skipped per cycle.")
    profiler_warmup_steps: int = Field(1, ge=0, description="Profiler: warm-up steps per cycle.")
    profiler_active_steps: int = Field(1, ge=1, description="Profiler: recorded steps per cycle.")
    profiler_repeat: int = Field(1, ge=0, description="Profiler: cycles (0 = until the end).")
    profiler_record_shapes: bool = Field(True, description="Profiler: record tensor shapes.")
    profiler_profile_memory: bool = Field(True, description="Profiler: record memory.")
    profiler_with_stack: bool = Field(True, description="Profiler: record stack traces.")
    profile_modules: str | None = Field(None, description="Profiler: module name patterns timed with CUDA events.")

    @model_validator(mode="after")
    def _swanlab_runs_here(self):
        if not self.use_swanlab:
            return self
        if self.swanlab_mode == "cloud" and not self.swanlab_api_key:
            raise ValueError(
                "use_swanlab with swanlab_mode: cloud uploads to SwanLab's servers and needs swanlab_api_key; set "
                "swanlab_mode: offline (or local) to write the run to swanlab_logdir only"
            )
        return self
