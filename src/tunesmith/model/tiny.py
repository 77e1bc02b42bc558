"""Tiny random-init causal LMs and a locally trained byte-level BPE tokenizer, for offline tests and demos."""

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunesmith.errors import ModelError
from tunesmith.staging import new_staging, publish

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

# Ids 0..2 follow the LLaMA convention; the trainer assigns ids in this order.
BASE_SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")

# Every special token the LLaMA-Factory chat templates and tool formats we support put in a prompt
# (chatml/qwen/yi, llama3, llama2/mistral, gemma, phi, glm4, deepseek), so each encodes to one id.
TEMPLATE_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|im_sep|>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|python_tag|>",
    "[INST]",
    "[/INST]",
    "[TOOL_CALLS]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
    "<bos>",
    "<eos>",
    "<pad>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|end|>",
    "[gMASK]",
    "<sop>",
    "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>",
)

# Added but not special (like Qwen's): atomic, yet kept by decode(skip_special_tokens=True).
TEMPLATE_ADDED_TOKENS = ("<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")

# Splits words, single digits, punctuation runs and newline runs (as Qwen2/LLaMA-3 style tokenizers do).
_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

BPE_VOCAB_SIZE = 1024 - len(TEMPLATE_ADDED_TOKENS)  # trainer target incl. specials; 1024 in all

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# arch -> (transformers config class name, per-arch config kwargs); the model class comes from AutoModelForCausalLM.
ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", {}),
    "qwen2": ("Qwen2Config", {"use_sliding_window": False}),
    "qwen3": ("Qwen3Config", {"use_sliding_window": False}),
    "mistral": ("MistralConfig", {"sliding_window": None}),
    "gemma": ("GemmaConfig", {"tie_word_embeddings": True}),  # Gemma always ties its embeddings
    "phi3": ("Phi3Config", {}),
}

# tiny vision-language models (model/vision.py, model/tiny_gemma3.py, model/tiny_internvl.py, model/vision_llava.py)
VISION_ARCHS = ("qwen2_vl", "gemma3", "internvl", "llava", "llava_next")
AUDIO_ARCHS = ("qwen2_audio", "qwen2_5_omni")  # tiny audio-language models (model/audio.py, model/omni.py)
MODEL_TYPES = {"qwen2_5_omni": "qwen2_5_omni_thinker"}  # arch -> its config's model_type, where they differ

# Training text of the tiny tokenizer: English, a little code and JSON, some Chinese.
CORPUS = """\
The quick brown fox jumps over the lazy dog. The dog sleeps in the sun, and the fox runs into the woods.
A language model reads text one token at a time and learns to predict the next token.
When we fine-tune a model, we start from its weights and train it a little more on our own data.
The user asks a question and the assistant gives a short, helpful and honest answer.
What is the capital of France? The capital of France is Paris.
What is the capital of Japan? The capital of Japan is Tokyo.
How many days are there in a week? There are seven days in a week.
How many hours are there in a day? There are twenty-four hours in a day.
Please write a short poem about the sea. The sea is wide, the sea is blue, the waves come in and go out too.
Translate "good morning" into French. In French, "good morning" is "bonjour".
Summarize the text in one sentence. The text says that small models are fast to train and easy to test.
Give me three tips for staying healthy: eat well, sleep well, and move every day.
Explain why the sky is blue. Sunlight is scattered by the air, and blue light is scattered the most.
I am a helpful assistant. I was trained to follow instructions and to answer questions.
Hello! How can I help you today? Thank you, that was very helpful.
def add(a, b):
    return a + b

for i in range(10):
    print(i, add(i, i))

{"name": "get_weather", "arguments": {"city": "Beijing", "unit": "celsius"}}
{"instruction": "Add two numbers.", "input": "2 and 3", "output": "2 + 3 = 5"}
The numbers are 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 42, 100 and 2024.
Learning rate, batch size, epochs, loss, gradient, optimizer, checkpoint, adapter, LoRA, dataset, template.
The training loss goes down and the evaluation loss goes down too, so the model is learning.
She said that they would come back in the morning, but they did not come back until the evening.
We can read the book, write a letter, play a game, or go for a walk in the park.
It is important to check the data before training, because bad data makes a bad model.
The system prompt tells the model who it is and how it should answer the user.
Each line of this text is a small example of what people write and what a model may read.
你好！我是一个人工智能助手，很高兴为你服务。
今天天气很好，我们去公园散步吧。
中国的首都是北京。日本的首都是东京。
请用一句话总结这段文字。这段文字说小模型训练很快，也很容易测试。
语言模型一次读取一个词元，并学习预测下一个词元。
我们用自己的数据对模型进行微调，让它更好地回答问题。
谢谢你的帮助！不客气，有问题随时问我。
一年有十二个月，一个星期有七天，一天有二十四个小时。
学习率、批大小、训练轮数、损失、梯度、优化器、检查点、数据集、模板。
"""


def build_tokenizer(chat_template: str | None = None) -> "PreTrainedTokenizerFast":
    """Train the deterministic tiny byte-level BPE tokenizer (bos <s>, eos </s>, unk <unk>, no pad)."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    # The same normalizer and pre-tokenizer as transformers' Qwen2Tokenizer, which AutoTokenizer swaps in for
    # model_type qwen2 whatever tokenizer_config.json says: this way every arch tokenizes identically.
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    # Adds nothing: templates put bos/eos in explicitly; ByteLevel only fixes offsets.
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=1,
        show_progress=False,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in BASE_SPECIAL_TOKENS]
        + [AddedToken(t, special=True, normalized=False) for t in TEMPLATE_SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(CORPUS.splitlines(keepends=True), trainer=trainer)
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in TEMPLATE_ADDED_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens=list(TEMPLATE_SPECIAL_TOKENS),
        clean_up_tokenization_spaces=False,
        chat_template=chat_template or CHATML_TEMPLATE,
        model_max_length=2048,
    )


def fingerprint(tokenizer: Any) -> str:
    """First 16 hex chars of a sha256 over the sorted vocab and added tokens: detects tokenizer drift."""
    added = sorted((str(tok), idx, tok.special) for idx, tok in tokenizer.added_tokens_decoder.items())
    payload = json.dumps([sorted(tokenizer.get_vocab().items()), added], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def _is_built(path: Path) -> bool:
    return (path / "config.json").is_file()


def _model_config(arch: str, vocab_size: int, tokenizer: Any, sizes: dict[str, int]) -> Any:
    """The transformers config for `arch`, with ids taken from the tokenizer and the given sizes."""
    import transformers

    config_name, arch_kwargs = ARCHS[arch]
    kwargs: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": sizes["hidden_size"],
        "num_hidden_layers": sizes["num_layers"],
        "num_attention_heads": sizes["num_heads"],
        "num_key_value_heads": sizes["num_kv_heads"],
        "head_dim": sizes["hidden_size"] // sizes["num_heads"],  # several configs default to 128 or 256
        "intermediate_size": sizes["intermediate_size"],
        "max_position_embeddings": sizes["max_position_embeddings"],
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,  # None: the tokenizer has no pad token
        "tie_word_embeddings": False,
    }
    if arch == "phi3":  # Phi3Config has no head_dim; its long-rope base length must not exceed the real one
        del kwargs["head_dim"]
        kwargs["original_max_position_embeddings"] = sizes["max_position_embeddings"]
    kwargs.update(arch_kwargs)
    return getattr(transformers, config_name)(**kwargs)


def _record_no_pad(path: Path) -> None:
    """Write `"pad_token": null` explicitly: classes like Qwen2Tokenizer otherwise default pad to <|endoftext|>."""
    data = json.loads(path.read_text(encoding="utf-8"))
    data.setdefault("pad_token", None)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Move the finished folder `tmp` to `out` in one rename, so `out` is never half written."""
    try:
        publish(tmp, out, replace=overwrite)
    except OSError as exc:
        what = "already holds a model" if _is_built(out) else "exists and is not empty"
        raise ModelError(f"{out} {what}; pass overwrite=True (or --overwrite) to replace it") from exc


def save_tiny_model(
    out_dir: str | os.PathLike,
    arch: str = "llama",
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 2048,
    seed: int = 0,
    chat_template: str | None = None,
    overwrite: bool = False,
    vocab_size: int | None = None,
) -> Path:
    """Build a seeded random-init `arch` causal LM (float32) with the tiny tokenizer and save it to `out_dir`.
    vocab_size widens the embeddings and the LM head past the tokenizer's 1,024 ids (as real models' are, e.g. for
    benchmarks of the head's cost); by default it is the tokenizer's size rounded up to a multiple of 8."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    out = Path(out_dir).expanduser().absolute()
    if arch not in (*ARCHS, *VISION_ARCHS, *AUDIO_ARCHS):
        raise ModelError(
            f"unknown tiny model arch {arch!r}; choose one of: {', '.join((*ARCHS, *VISION_ARCHS, *AUDIO_ARCHS))}"
        )
    if not overwrite and (_is_built(out) or (out.exists() and any(out.iterdir()))):
        what = "already holds a model" if _is_built(out) else "exists and is not empty"
        raise ModelError(f"{out} {what}; pass overwrite=True (or --overwrite) to replace it")
    if hidden_size % num_heads or num_heads % num_kv_heads:
        raise ModelError(
            f"hidden_size ({hidden_size}) must divide by num_heads ({num_heads}), "
            f"and num_heads by num_kv_heads ({num_kv_heads})"
        )
    tokenizer = build_tokenizer(chat_template)
    tokenizer.model_max_length = max_position_embeddings
    if arch in (*VISION_ARCHS, *AUDIO_ARCHS):  # fixed tiny sizes: the model, its media tokens and processor
        from tunesmith.model.vision import save_tiny_vl

        if arch == "gemma3":
            from tunesmith.model.tiny_gemma3 import save_tiny_gemma3 as save_tiny_vl
        if arch == "internvl":
            from tunesmith.model.tiny_internvl import save_tiny_internvl as save_tiny_vl
        if arch in ("llava", "llava_next"):
            import functools

            from tunesmith.model.vision_llava import save_tiny_llava

            save_tiny_vl = functools.partial(save_tiny_llava, arch=arch)
        if arch == "qwen2_audio":
            from tunesmith.model.audio import save_tiny_audio as save_tiny_vl
        if arch == "qwen2_5_omni":
            from tunesmith.model.omni import save_tiny_omni as save_tiny_vl

        tmp = new_staging(out)
        try:
            save_tiny_vl(tmp, tokenizer, seed=seed)
            _record_no_pad(tmp / "tokenizer_config.json")
            _publish(tmp, out, overwrite)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out
    sizes = {
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "num_kv_heads": num_kv_heads,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": max_position_embeddings,
    }
    if vocab_size is not None and vocab_size < len(tokenizer):
        raise ModelError(f"vocab_size ({vocab_size}) must be at least the tokenizer's {len(tokenizer)} ids")
    vocab_size = vocab_size or -(-len(tokenizer) // 8) * 8
    config = _model_config(arch, vocab_size, tokenizer, sizes)
    with torch.random.fork_rng(devices=[]):  # seed locally; leave the caller's RNG as it was
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )

    tmp = new_staging(out)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _record_no_pad(tmp / "tokenizer_config.json")
        _publish(tmp, out, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename
    return out


def ensure_tiny_model(out_dir: str | os.PathLike, arch: str = "llama", **kwargs: Any) -> Path:
    """Return `out_dir` if it already holds a built model (of this arch), else build it there."""
    out = Path(out_dir).expanduser().absolute()
    if not _is_built(out):
        try:
            return save_tiny_model(out, arch, **kwargs)
        except ModelError:
            if not _is_built(out):  # not a lost race with another builder: a real problem
                raise
    model_type = json.loads((out / "config.json").read_text(encoding="utf-8")).get("model_type")
    if model_type != MODEL_TYPES.get(arch, arch):
        raise ModelError(f"{out} holds a {model_type!r} model, not {arch!r}; use another folder or rebuild it")
    return out
