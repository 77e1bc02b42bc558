"""GGUF export, checked by readers tunesmith did not write: transformers' GGUF loader and the gguf package's reader."""

import pytest
import torch

from tunesmith.cli import main

pytest.importorskip("gguf")

IDS = torch.tensor([[4, 100, 200, 300, 5, 17, 900, 1000]])
TEXTS = [
    "Hello world, how are you?",
    "<|im_start|>user\n你好！<|im_end|>\n<|im_start|>assistant\n",
    "def add(a, b):\n    return a + b  # 42",
]
# Largest logit difference allowed against the HF model (the tiny models' logits are within about +-1).
TOLERANCE = {"f16": 2e-3, "q8_0": 3e-2, "f32": 1e-5}


def _load_gguf(folder, name, reference):
    from transformers import AutoModelForCausalLM

    # transformers 5.23 reads no head_count_kv/head_dim for qwen3 GGUFs (its GGUF_CONFIG_MAPPING lacks them), so the
    # config is given; the tensors still come through its GGUF reader and name mapping.
    extra = {"config": reference.config} if reference.config.model_type == "qwen3" else {}
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, **extra)


def _metadata(path, key):
    from gguf import GGUFReader

    field = GGUFReader(str(path)).fields[key]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


@pytest.mark.parametrize(
    ("arch", "quantization"),
    [("llama", "f16"), ("llama", "q8_0"), ("qwen2", "f16"), ("qwen3", "q8_0"), ("mistral", "f16")],
)
def test_transformers_reads_back_the_same_model_and_tokenizer(tiny_model_dirs, tmp_path, arch, quantization):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.export_gguf import write_gguf

    source = tiny_model_dirs[arch]
    model, tokenizer = AutoModelForCausalLM.from_pretrained(source), AutoTokenizer.from_pretrained(source)
    path = write_gguf(model, tokenizer, tmp_path / "m.gguf", quantization)
    loaded = _load_gguf(tmp_path, "m.gguf", model)
    rebuilt = AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf")
    with torch.no_grad():
        diff = (loaded(IDS).logits - model(IDS).logits).abs().max().item()
    assert diff < TOLERANCE[quantization]
    assert all(rebuilt(text).input_ids == tokenizer(text).input_ids for text in TEXTS)
    assert _metadata(path, "tokenizer.chat_template") == tokenizer.chat_template


def test_gemma_tensors_read_back_as_llama_cpp_stores_them(tiny_model_dirs, tmp_path):
    """transformers 5.23 loads no `gemma` (v1) GGUF, so the gguf package's reader checks the tensors instead."""
    from gguf import GGUFReader, dequantize
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.export_gguf import write_gguf

    source = tiny_model_dirs["gemma"]
    model = AutoModelForCausalLM.from_pretrained(source)
    path = write_gguf(model, AutoTokenizer.from_pretrained(source), tmp_path / "g.gguf", "f16")
    tensors = {t.name: dequantize(t.data, t.tensor_type) for t in GGUFReader(str(path)).tensors}
    state = model.state_dict()
    assert "output.weight" not in tensors  # tied head: llama.cpp reuses token_embd
    assert torch.allclose(
        torch.from_numpy(tensors["blk.0.attn_norm.weight"].copy()), state["model.layers.0.input_layernorm.weight"] + 1
    )
    assert torch.allclose(
        torch.from_numpy(tensors["blk.1.ffn_down.weight"].copy()).float(),
        state["model.layers.1.mlp.down_proj.weight"],
        atol=1e-3,
    )


def test_cli_exports_a_merged_lora_as_gguf_with_a_modelfile(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from tunesmith.config.load import load_config
    from tunesmith.model.load import load_model, load_tokenizer

    demo = __import__("tunesmith.demo", fromlist=["DEMO_DATA"]).DEMO_DATA
    (tmp_path / "c.yaml").write_text("stage: sft\n")
    adapter = tmp_path / "adapter"
    assert (
        main(
            [
                "train",
                str(tmp_path / "c.yaml"),
                f"model_name_or_path={tiny_model_dir}",
                "dataset=tunesmith_identity",
                f"dataset_dir={demo}",
                "template=chatml",
                f"output_dir={adapter}",
                "max_steps=3",
                "learning_rate=1e-2",
                "report_to=none",
                "save_strategy=no",
            ]
        )
        == 0
    )
    keys = [f"model_name_or_path={tiny_model_dir}", f"adapter_name_or_path={adapter}", "template=chatml"]
    out = tmp_path / "gguf"
    assert (
        main(
            [
                "export",
                str(tmp_path / "c.yaml"),
                *keys,
                f"export_dir={out}",
                "export_format=gguf",
                "export_quantization=q8_0",
            ]
        )
        == 0
    )
    config = load_config(tmp_path / "c.yaml", keys)
    merged = load_model(config.model, config.method, load_tokenizer(config.model), is_trainable=False)
    loaded = _load_gguf(out, "model-q8_0.gguf", merged)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        assert (loaded(IDS).logits - merged(IDS).logits).abs().max() < TOLERANCE["q8_0"]
        assert (loaded(IDS).logits - base(IDS).logits).abs().max() > 0.1  # the adapter is in it
    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model-q8_0.gguf\n")
    assert '{{ if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n<|im_start|>assistant\n' in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and 'PARAMETER stop "<|im_start|>"' in modelfile
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "model-q8_0.gguf"]


def test_unmapped_arch_is_refused_with_the_mapped_ones(tmp_path, tiny_model_dirs, capsys):
    (tmp_path / "c.yaml").write_text("stage: sft\n")
    code = main(
        [
            "export",
            str(tmp_path / "c.yaml"),
            f"model_name_or_path={tiny_model_dirs['phi3']}",
            f"export_dir={tmp_path / 'x'}",
            "export_format=gguf",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "'phi3'" in err and "llama, mistral, qwen2, qwen3, gemma" in err
    assert not (tmp_path / "x").exists()
