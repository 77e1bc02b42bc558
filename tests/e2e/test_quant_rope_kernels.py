"""QLoRA (bitsandbytes and HQQ, 4 and 8 bits), RoPE scaling and the acceleration switches, for real on CPU."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunesmith.cli import main
from tunesmith.config.load import load_config
from tunesmith.errors import DependencyError

DEMO_DATA = Path(__file__).resolve().parents[2] / "src" / "tunesmith" / "demo_data"


@pytest.mark.parametrize("method, bits", [("bitsandbytes", 4), ("bitsandbytes", 8), ("hqq", 4), ("hqq", 8)])
def test_qlora_trains_and_reloads_the_same(tiny_model_dir, tmp_path, method, bits):
    pytest.importorskip(method)
    from tunesmith.infer.engine import ChatEngine

    (tmp_path / "c.yaml").write_text("stage: sft\n")
    out = tmp_path / "out"
    assert main(["train", str(tmp_path / "c.yaml"), f"model_name_or_path={tiny_model_dir}", "dataset=tunesmith_identity",
                 f"dataset_dir={DEMO_DATA}", "template=chatml", f"output_dir={out}", "max_steps=3",
                 "learning_rate=1e-2", "report_to=none", "save_strategy=no", f"quantization_bit={bits}",
                 f"quantization_method={method}"]) == 0
    weights = load_file(out / "adapter_model.safetensors")
    assert any(torch.count_nonzero(w) for k, w in weights.items() if "lora_B" in k)  # the adapter trained
    recorded = load_config(out)
    assert recorded.model.quantization_bit == bits and recorded.model.quantization_method == method
    replies = []
    for _ in range(2):  # a run folder reloads base + quantization + adapter exactly as trained
        engine = ChatEngine(load_config(out, ["do_sample=false", "max_new_tokens=6"]))
        replies.append(engine.chat([{"role": "user", "content": "Who are you?"}])[0].completion_tokens)
        kinds = {type(module).__name__ for name, module in engine.model.named_modules() if name.endswith("q_proj")}
        expected = {4: "Linear4bit", 8: "Linear8bitLt"}[bits] if method == "bitsandbytes" else "HQQ"
        assert any(expected in kind for kind in kinds), kinds
    assert replies[0] == replies[1]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's /proc/self/maps")
def test_qlora_weights_do_not_keep_the_checkpoint_mapped(tiny_model_dir):
    """The weights bitsandbytes leaves unquantized are copied out of the memory-mapped checkpoint for training."""
    pytest.importorskip("bitsandbytes")
    from tunesmith.model.load import load_model

    config = load_config(None, {"model_name_or_path": str(tiny_model_dir), "quantization_bit": 4})
    model = load_model(config.model, config.method, None, is_trainable=True, cutoff_len=config.data.cutoff_len)
    mapped = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith("model.safetensors") and str(tiny_model_dir) in line:
            start, end = (int(bound, 16) for bound in line.split()[0].split("-"))
            mapped.append((start, end))
    inside = [name for name, param in model.named_parameters()
              if any(start <= param.data_ptr() < end for start, end in mapped)]
    assert not inside


def _load(tiny_model_dir, **keys):
    from tunesmith.model.load import load_model

    config = load_config(None, {"model_name_or_path": str(tiny_model_dir), **keys})
    return load_model(config.model, config.method, None, is_trainable=False, cutoff_len=config.data.cutoff_len)


def test_rope_linear_scales_the_rotary_table_by_the_factor_rule(tiny_model_dir):
    base = _load(tiny_model_dir, finetuning_type="full")
    scaled = _load(tiny_model_dir, finetuning_type="full", rope_scaling="linear", cutoff_len=5000)
    assert scaled.config.rope_parameters["factor"] == 3.0  # ceil(5000 / 2048)
    assert scaled.config.rope_parameters["rope_theta"] == base.config.rope_parameters["rope_theta"]
    assert torch.allclose(scaled.model.rotary_emb.inv_freq, base.model.rotary_emb.inv_freq / 3)
    fits = _load(tiny_model_dir, finetuning_type="full", rope_scaling="linear", cutoff_len=1024)
    assert torch.equal(fits.model.rotary_emb.inv_freq, base.model.rotary_emb.inv_freq)  # fits: no scaling
    forced = _load(tiny_model_dir, finetuning_type="full", rope_scaling="linear", rope_scaling_factor=2.0)
    assert torch.allclose(forced.model.rotary_emb.inv_freq, base.model.rotary_emb.inv_freq / 2)


def test_rope_dynamic_changes_the_table_for_long_inputs(tiny_model_dir):
    dynamic = _load(tiny_model_dir, finetuning_type="full", rope_scaling="dynamic", cutoff_len=4096)
    assert dynamic.config.rope_parameters == {"rope_type": "dynamic", "factor": 2.0,
                                              "rope_theta": dynamic.config.rope_parameters["rope_theta"]}
    before = dynamic.model.rotary_emb.inv_freq.clone()
    ids = torch.ones(1, 2100, dtype=torch.long)
    with torch.no_grad():
        dynamic(ids[:, :2100])
    assert not torch.equal(dynamic.model.rotary_emb.inv_freq, before)  # recomputed past max positions


@pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is not None and torch.cuda.is_available(),
                    reason="Liger runs here")
def test_liger_without_gpu_or_package_stops_with_the_cause(tiny_model_dir):
    with pytest.raises(DependencyError, match="enable_liger_kernel needs"):
        _load(tiny_model_dir, enable_liger_kernel=True)


@pytest.mark.skipif(importlib.util.find_spec("unsloth") is not None and torch.cuda.is_available(),
                    reason="Unsloth runs here")
def test_unsloth_without_gpu_or_package_stops_with_the_cause(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("stage: sft\n")
    code = main(["train", str(tmp_path / "c.yaml"), f"model_name_or_path={tiny_model_dir}",
                 "dataset=tunesmith_identity", f"dataset_dir={DEMO_DATA}", "template=chatml",
                 f"output_dir={tmp_path / 'out'}", "use_unsloth=true", "max_steps=1"])
    assert code == 2 and "use_unsloth needs" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("liger_kernel") is None,
                    reason="needs a CUDA GPU and liger-kernel")
def test_liger_patches_and_runs_on_gpu(tiny_model_dir):
    model = _load(tiny_model_dir, enable_liger_kernel=True, finetuning_type="full").cuda()
    assert "Liger" in type(model.model.norm).__name__
    model(torch.tensor([[1, 2, 3]], device="cuda"))


def test_quantization_refusals(tiny_model_dir, tmp_path, capsys):
    from tunesmith.errors import ConfigError

    with pytest.raises(ConfigError, match="can only be trained with finetuning_type: lora"):
        load_config(None, {"quantization_bit": 4, "finetuning_type": "freeze"})
    with pytest.raises(ConfigError, match="quantization_bit"):
        load_config(None, {"quantization_bit": 3})
    assert json.loads(json.dumps({"ok": True}))
