"""GGUF export: the merged model, its byte-level BPE tokenizer and chat template as one llama.cpp/Ollama file."""

from __future__ import annotations

import logging
from pathlib import Path

from tunesmith.errors import DependencyError, ModelError

log = logging.getLogger(__name__)

# transformers model_type -> how llama.cpp's convert_hf_to_gguf.py writes it (its LlamaModel, MistralModel,
# Qwen2Model, Qwen3Model and GemmaModel classes): the GGUF architecture, whether q/k rows are permuted from HF's
# half-split rotary layout to GGML's interleaved one, and whether RMSNorm weights get +1 (Gemma's norm computes
# x * (1 + w); llama.cpp stores 1 + w).
ARCHS = {
    "llama": {"arch": "llama", "permute_qk": True},
    "mistral": {"arch": "llama", "permute_qk": True},  # llama.cpp writes Mistral as llama
    "qwen2": {"arch": "qwen2"},
    "qwen3": {"arch": "qwen3"},
    "gemma": {"arch": "gemma", "norm_plus_one": True},
}
QUANTIZATIONS = ("f16", "q8_0", "f32")
Q8_BLOCK = 32  # Q8_0 quantizes rows in blocks of 32 values; other rows stay f16, as llama.cpp does


def _gguf():
    try:
        import gguf
    except ImportError:
        raise DependencyError("export_format: gguf needs the `gguf` package: pip install 'tunesmith[gguf]'") from None
    return gguf


# A multimodal model's sub-config -> the encoder llama.cpp keeps outside the language model's GGUF, in its mmproj file
MEDIA_ENCODERS = {"vision_config": "vision encoder and projector", "audio_config": "audio encoder and projector"}


def check_arch(config) -> dict:
    """How llama.cpp writes this model (a transformers config, or its model_type); refuses what is not mapped,
    multimodal models first: their encoder belongs in a separate mmproj GGUF that this export does not write."""
    model_type = config if isinstance(config, str) else config.model_type
    encoders = [what for key, what in MEDIA_ENCODERS.items() if getattr(config, key, None) is not None]
    if encoders:
        raise ModelError(
            f"GGUF export of a multimodal model ({model_type}) is not supported: llama.cpp runs it from two files, "
            f"the language model's GGUF and a separate mmproj GGUF holding its {' and '.join(encoders)} (made by "
            "llama.cpp's convert_hf_to_gguf.py --mmproj, loaded with llama-mtmd-cli --mmproj), and tunesmith writes "
            "neither the mmproj file nor this model's language part. Export safetensors instead (export_format: "
            "safetensors, the default: the merged model with its processor files) and run convert_hf_to_gguf.py "
            "on that folder twice, once without and once with --mmproj"
        )
    if model_type not in ARCHS:
        raise ModelError(
            f"GGUF export does not map model_type {model_type!r} yet; mapped: {', '.join(ARCHS)}. "
            "Use export_format: safetensors (the default) and llama.cpp's convert_hf_to_gguf.py"
        )
    return ARCHS[model_type]


def _permute(weights, n_head: int):
    """HF's rotary halves -> GGML's interleaved pairs (llama.cpp convert_hf_to_gguf.py, LlamaModel.permute)."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _tensors(model, spec: dict, quantization: str):
    """(gguf name, numpy data, raw ggml dtype or None) for every weight, converted as llama.cpp converts it."""
    import torch

    gguf = _gguf()
    config = model.config
    tensor_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[spec["arch"].upper()], config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # a tied head is the embedding matrix: llama.cpp writes no output.weight then
        base, _, suffix = hf_name.rpartition(".")
        name = tensor_map.get_name(base)
        if name is None:
            raise ModelError(f"GGUF export: no GGUF name for tensor {hf_name} of {config.model_type}")
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if spec.get("permute_qk") and base.endswith("self_attn.q_proj"):
            data = _permute(data, n_head)
        elif spec.get("permute_qk") and base.endswith("self_attn.k_proj"):
            data = _permute(data, n_kv)
        if spec.get("norm_plus_one") and base.endswith("norm"):
            data = data + 1
        name = f"{name}.{suffix}"
        if data.ndim == 1 or quantization == "f32":
            yield name, data, None  # norms and biases stay f32, as in every llama.cpp conversion
        elif quantization == "q8_0" and data.shape[-1] % Q8_BLOCK == 0:
            yield name, gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
        else:
            yield name, data.astype("float16"), None


def _known_splits() -> dict[str, str]:
    """Pre-tokenizer regexes -> llama.cpp's `tokenizer.ggml.pre` names (llama.cpp src/llama-vocab.cpp)."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import _LLAMA3_SPLIT, _QWEN2_SPLIT

    return {_QWEN2_SPLIT: "qwen2", _LLAMA3_SPLIT: "llama-bpe"}


def _pre_tokenizer(backend: dict) -> str:
    pre = backend.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre])
    if len(steps) == 1 and steps[0].get("type") == "ByteLevel" and steps[0].get("use_regex", True):
        return "gpt-2"
    splits = [s["pattern"].get("Regex") for s in steps if s.get("type") == "Split" and "pattern" in s]
    if splits and all(s.get("type") in ("Split", "ByteLevel") for s in steps):
        known = _known_splits()
        if splits[0] in known:
            return known[splits[0]]
    raise ModelError(
        "GGUF export: this tokenizer's pre-tokenizer is not one llama.cpp names (mapped: gpt-2, qwen2, "
        "llama-bpe); export as safetensors and convert with llama.cpp's convert_hf_to_gguf.py"
    )


def _add_tokenizer(writer, tokenizer, vocab_size: int) -> None:
    """Vocab, merges, token types, special ids and chat template under llama.cpp's `tokenizer.ggml.*` keys."""
    import json

    gguf = _gguf()
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    model = backend.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise ModelError(
            "GGUF export writes byte-level BPE tokenizers (Llama 3, Qwen, GPT-2 style) only; this one is "
            f"{model.get('type')}{' with byte fallback (SentencePiece)' if model.get('byte_fallback') else ''}"
        )
    pre = _pre_tokenizer(backend)
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    added = {index: token.special for index, token in tokenizer.added_tokens_decoder.items()}
    size = max(vocab_size, max(by_id) + 1)
    tokens, types = [], []
    for index in range(size):
        if index not in by_id:  # an embedding row past the tokenizer (rounded-up vocab): llama.cpp's [PADn]
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(by_id[index])
        types.append(
            gguf.TokenType.NORMAL
            if index not in added
            else gguf.TokenType.CONTROL
            if added[index]
            else gguf.TokenType.USER_DEFINED
        )
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, token_id in (
        ("bos", tokenizer.bos_token_id),
        ("eos", tokenizer.eos_token_id),
        ("unk", tokenizer.unk_token_id),
        ("pad", tokenizer.pad_token_id),
    ):
        if token_id is not None:
            getattr(writer, f"add_{key}_token_id")(token_id)
    probe = tokenizer("a").input_ids
    writer.add_add_bos_token(bool(probe) and probe[0] == tokenizer.bos_token_id)
    writer.add_add_eos_token(bool(probe) and probe[-1] == tokenizer.eos_token_id)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def _rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    if params.get("rope_type", "default") != "default":
        raise ModelError(
            f"GGUF export does not write RoPE scaling ({params['rope_type']}) yet; export without "
            "rope_scaling, or as safetensors"
        )
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def write_gguf(model, tokenizer, path: Path, quantization: str = "f16", name: str = "model") -> Path:
    """Write `model` (a merged, full-precision HF causal LM) with `tokenizer` as one GGUF file at `path`."""
    config = model.config
    spec = check_arch(config)  # a multimodal model is refused whether or not the gguf package is installed
    gguf = _gguf()
    if quantization not in QUANTIZATIONS:
        raise ModelError(f"export_quantization {quantization!r}: choose one of {', '.join(QUANTIZATIONS)}")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer = gguf.GGUFWriter(str(path), spec["arch"])
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    file_type = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0"}[quantization]
    writer.add_file_type(gguf.LlamaFileType[file_type])
    _add_tokenizer(writer, tokenizer, config.vocab_size)
    for tensor_name, data, raw_dtype in _tensors(model, spec, quantization):
        writer.add_tensor(tensor_name, data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def go_template(template, tokenizer) -> str:
    """The tunesmith template's slots as an Ollama (Go text/template) TEMPLATE over .System and .Messages."""
    from tunesmith.data.template import BOS, EOS

    def render(slots, value):
        out = []
        for slot in slots:
            if slot == BOS:
                out.append(tokenizer.bos_token or "")
            elif slot == EOS:
                out.append(tokenizer.eos_token or "")
            else:
                out.append(slot.replace("{{content}}", value))
        return "".join(out)

    prefix = render(template.prefix, "")
    return (
        prefix + "{{ if .System }}" + render(template.system, "{{ .System }}") + "{{ end }}"
        '{{ range .Messages }}{{ if eq .Role "user" }}'
        + render(template.user, "{{ .Content }}")
        + '{{ else if eq .Role "assistant" }}'
        + render(template.assistant, "{{ .Content }}")
        + "{{ end }}{{ end }}"
    )


def write_modelfile(folder: Path, gguf_name: str, template, tokenizer) -> Path:
    """An Ollama Modelfile beside the GGUF: FROM it, the chat TEMPLATE, the default SYSTEM and the stop tokens."""
    stops = [word for word in dict.fromkeys([*template.stop_words, tokenizer.eos_token]) if word]
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{go_template(template, tokenizer)}"""']
    if template.default_system:
        lines.append(f'SYSTEM """{template.default_system}"""')
    lines += [f'PARAMETER stop "{word}"' for word in stops]
    path = folder / "Modelfile"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def export_gguf(model, tokenizer, template, folder: Path, quantization: str) -> Path:
    """model-<quantization>.gguf and an Ollama Modelfile in `folder`; returns the GGUF's path."""
    check_arch(model.config)
    gguf_name = f"model-{quantization}.gguf"
    path = write_gguf(model, tokenizer, folder / gguf_name, quantization)
    write_modelfile(folder, gguf_name, template, tokenizer)
    log.info("GGUF (%s) written to %s", quantization, path)
    return path
