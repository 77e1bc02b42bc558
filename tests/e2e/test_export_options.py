"""`tunesmith export` with LLaMA-Factory's export_legacy_format (.bin weights) and export_device; GPTQ refused."""

import pytest
import torch

from tunesmith.cli import main


def export(tmp_path, model_dir, name, *keys):
    (tmp_path / "c.yaml").write_text("stage: sft\n")
    out = tmp_path / name
    args = [f"model_name_or_path={model_dir}", "template=chatml", f"export_dir={out}", "export_dtype=float32", *keys]
    assert main(["export", str(tmp_path / "c.yaml"), *args]) == 0
    return out


def test_legacy_format_writes_bin_weights_that_load_the_same(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    safe = export(tmp_path, tiny_model_dir, "safe")
    legacy = export(tmp_path, tiny_model_dir, "legacy", "export_legacy_format=true")
    assert (safe / "model.safetensors").is_file() and not list(safe.glob("*.bin"))
    assert (legacy / "pytorch_model.bin").is_file() and not list(legacy.glob("*.safetensors"))
    ids = torch.tensor([[4, 100, 200, 300, 5]])
    with torch.no_grad():
        expected = AutoModelForCausalLM.from_pretrained(safe)(ids).logits
        assert torch.equal(AutoModelForCausalLM.from_pretrained(legacy)(ids).logits, expected)


def test_legacy_format_shards_keep_their_index(tmp_path, tiny_model_dir):
    import json

    from transformers import AutoModelForCausalLM

    from tunesmith.export import to_legacy_format

    folder = tmp_path / "sharded"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.save_pretrained(folder, max_shard_size="100KB")
    assert (folder / "model.safetensors.index.json").is_file()
    to_legacy_format(folder)
    index = json.loads((folder / "pytorch_model.bin.index.json").read_text())
    assert {name for name in index["weight_map"].values()} == {path.name for path in folder.glob("*.bin")}
    reloaded = AutoModelForCausalLM.from_pretrained(folder)
    for name, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], value), name


def test_export_device_auto_writes_the_same_weights(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    cpu = load_file(export(tmp_path, tiny_model_dir, "cpu") / "model.safetensors")
    auto = load_file(export(tmp_path, tiny_model_dir, "auto", "export_device=auto") / "model.safetensors")
    assert cpu.keys() == auto.keys() and all(torch.equal(cpu[name], auto[name]) for name in cpu)


def test_gptq_export_is_refused_with_the_reason(tmp_path, tiny_model_dir, capsys):
    (tmp_path / "c.yaml").write_text("stage: sft\n")
    code = main(
        [
            "export",
            str(tmp_path / "c.yaml"),
            f"model_name_or_path={tiny_model_dir}",
            f"export_dir={tmp_path / 'q'}",
            "export_quantization_bit=4",
            "export_quantization_dataset=data/c4_demo.jsonl",
        ]
    )
    assert code != 0 and "GPTQ" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("value", ["cuda", "npu"])
def test_export_device_takes_llamafactory_values_only(tmp_path, tiny_model_dir, capsys, value):
    (tmp_path / "c.yaml").write_text("stage: sft\n")
    code = main(
        [
            "export",
            str(tmp_path / "c.yaml"),
            f"model_name_or_path={tiny_model_dir}",
            f"export_dir={tmp_path / 'x'}",
            f"export_device={value}",
        ]
    )
    assert code != 0 and "export_device" in capsys.readouterr().err
