"""LLaMA-Factory's training features on the tiny model: optimizer switches, OFT, LLaMA Pro, train_from_scratch and
added tokens, each trained a few steps through `tunesmith train`."""

import importlib.util

import pytest
import torch
from safetensors.torch import load_file

from tests.e2e.test_train import losses, train
from tunesmith.cli import main


def _needs(module):
    return pytest.mark.skipif(
        importlib.util.find_spec(module) is None, reason=f"needs {module} (pip install 'tunesmith[optim]')"
    )


FULL = ("finetuning_type=full", "disable_gradient_checkpointing=true", "learning_rate=1e-3")


@pytest.mark.parametrize(
    "switch",
    [
        pytest.param(
            ("use_galore=true", "galore_rank=4", "galore_update_interval=2", "galore_scale=1.0"),
            marks=_needs("galore_torch"),
            id="galore",
        ),
        pytest.param(
            ("use_galore=true", "galore_rank=4", "galore_layerwise=true", "galore_target=q_proj,v_proj"),
            marks=_needs("galore_torch"),
            id="galore-layerwise",
        ),
        pytest.param(
            ("use_apollo=true", "apollo_rank=4", "apollo_scale=1.0", "apollo_update_interval=2"),
            marks=_needs("apollo_torch"),
            id="apollo",
        ),
        pytest.param(
            ("use_badam=true", "badam_mode=ratio", "badam_update_ratio=0.5"), marks=_needs("badam"), id="badam-ratio"
        ),
        pytest.param(("use_adam_mini=true",), marks=_needs("adam_mini"), id="adam-mini"),
        pytest.param(("use_muon=true",), id="muon"),
    ],
)
def test_optimizer_switch_trains_and_the_loss_falls(tiny_model_dir, tmp_path, switch):
    out = train(tiny_model_dir, tmp_path / "opt", *FULL, *switch, dataset="tunesmith_identity", steps=6)
    seen = losses(out)
    assert len(seen) == 6 and seen[-1] < seen[0], seen


@_needs("badam")
def test_badam_layer_mode_updates_only_the_active_block(tiny_model_dir, tmp_path):
    out = train(
        tiny_model_dir,
        tmp_path / "badam",
        *FULL,
        "use_badam=true",
        "badam_mode=layer",
        "badam_switch_mode=fixed",
        "badam_start_block=1",
        "badam_switch_interval=50",
        dataset="tunesmith_identity",
        steps=4,
    )
    seen = losses(out)
    assert seen[-1] < seen[0], seen
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(out / "model.safetensors")
    changed = {name for name in before if name in after and not torch.equal(before[name], after[name])}
    assert changed and all(".layers.1." in name for name in changed), sorted(changed)


@pytest.mark.parametrize(
    "switch, message",
    [
        (("use_galore=true",), "finetuning_type: full"),
        (("use_badam=true", "use_apollo=true", "finetuning_type=full"), "choose one optimizer switch"),
        (
            ("use_galore=true", "galore_layerwise=true", "finetuning_type=full", "gradient_accumulation_steps=2"),
            "gradient_accumulation_steps: 1",
        ),
    ],
)
def test_optimizer_switch_refusals(tiny_model_dir, tmp_path, capsys, switch, message):
    out = tmp_path / "refused"
    code = main(
        [
            "train",
            f"model_name_or_path={tiny_model_dir}",
            "dataset=tunesmith_identity",
            f"output_dir={out}",
            "max_steps=1",
            *switch,
        ]
    )
    assert code != 0
    assert message in capsys.readouterr().err
    assert not out.exists()
