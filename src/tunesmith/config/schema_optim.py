"""LLaMA-Factory's optimizer switches and their options (GaLore, APOLLO, BAdam, Adam-mini, Muon)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunesmith.config.schema_base import Group, NameList


class OptimArgs(Group):
    """Optimizers LLaMA-Factory adds beside transformers' `optim`; each option only matters with its switch on."""

    use_galore: bool = Field(False, description="GaLore: gradient low-rank projection.")
    galore_target: NameList = Field(["all"], description="GaLore: modules it applies to.")
    galore_rank: int = Field(16, ge=1, description="GaLore: projection rank.")
    galore_update_interval: int = Field(200, ge=1, description="GaLore: steps between projection updates.")
    galore_scale: float = Field(2.0, description="GaLore: scaling coefficient.")
    galore_proj_type: Literal["std", "reverse_std", "right", "left", "full"] = Field(
        "std", description="GaLore: projection type."
    )
    galore_layerwise: bool = Field(False, description="GaLore: update layer by layer to save memory.")
    use_apollo: bool = Field(False, description="APOLLO: approximated gradient scaling.")
    apollo_target: NameList = Field(["all"], description="APOLLO: modules it applies to.")
    apollo_rank: int = Field(16, ge=1, description="APOLLO: projection rank.")
    apollo_update_interval: int = Field(200, ge=1, description="APOLLO: steps between projection updates.")
    apollo_scale: float = Field(32.0, description="APOLLO: scaling coefficient.")
    apollo_proj: Literal["svd", "random"] = Field("random", description="APOLLO: projection kind.")
    apollo_proj_type: Literal["std", "right", "left"] = Field("std", description="APOLLO: projection type.")
    apollo_scale_type: Literal["channel", "tensor"] = Field("channel", description="APOLLO: scale granularity.")
    apollo_layerwise: bool = Field(False, description="APOLLO: update layer by layer to save memory.")
    apollo_scale_front: bool = Field(False, description="APOLLO: scale before gradient clipping.")
    use_badam: bool = Field(False, description="BAdam: block coordinate Adam.")
    badam_mode: Literal["layer", "ratio"] = Field("layer", description="BAdam: layer-wise or ratio-wise.")
    badam_start_block: int | None = Field(None, description="BAdam: first block updated (layer mode).")
    badam_switch_mode: Literal["ascending", "descending", "random", "fixed"] | None = Field(
        "ascending", description="BAdam: block order (layer mode)."
    )
    badam_switch_interval: int | None = Field(50, description="BAdam: steps between block switches (layer mode).")
    badam_update_ratio: float = Field(0.05, description="BAdam: fraction of parameters updated (ratio mode).")
    badam_mask_mode: Literal["adjacent", "scatter"] = Field("adjacent", description="BAdam: mask mode (ratio mode).")
    badam_verbose: int = Field(0, ge=0, le=2, description="BAdam: logging level 0-2.")
    use_adam_mini: bool = Field(False, description="Adam-mini optimizer.")
    use_muon: bool = Field(False, description="Muon optimizer.")
