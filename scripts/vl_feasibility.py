"""Feasibility check: a tiny random Qwen2-VL model + slow processor on the LF demo images, forward + backward."""

import sys
import time

import torch
from PIL import Image
from tokenizers import AddedToken
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor

from tunesmith.model.tiny import build_tokenizer

DATA = "/work/shared/lf-demo-data/mllm_demo_data"
VL_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]

t0 = time.time()
tok = build_tokenizer()
tok.add_special_tokens({"additional_special_tokens": [AddedToken(t, special=True) for t in VL_TOKENS]})
ids = {t: tok.convert_tokens_to_ids(t) for t in VL_TOKENS}
print("tokenizer vocab", len(tok), ids)
imgs = [Image.open(f"{DATA}/{i}.jpg").convert("RGB") for i in (1, 2)]
ip = Qwen2VLImageProcessor(min_pixels=32 * 32, max_pixels=64 * 64)
# Qwen2VLProcessor(...) itself cannot be built here: ProcessorMixin checks its required video_processor against
# VIDEO_PROCESSOR_MAPPING, a torchvision-only placeholder -> AttributeError '_extra_content'. So, as LF's mm_plugin
# does, run the image processor and expand <|image_pad|> to grid.prod() // merge**2 tokens ourselves.
img_out = ip(images=imgs, return_tensors="pt")
merge = ip.merge_size**2
texts = []
for n, q in zip((img_out["image_grid_thw"][i].prod() // merge for i in range(2)), ("Who?", "x")):
    texts.append("<|vision_start|>" + "<|image_pad|>" * int(n) + "<|vision_end|>" + q)
tok.pad_token = tok.pad_token or "<pad>"
out = dict(tok(texts, return_tensors="pt", padding=True))
out.update(img_out)
# transformers 5.x M-RoPE needs the processor's mm_token_type_ids (1 = image token, 2 = video token, 0 = text).
out["mm_token_type_ids"] = (out["input_ids"] == ids["<|image_pad|>"]).long() + 2 * (
    out["input_ids"] == ids["<|video_pad|>"]
).long()
print({k: tuple(v.shape) for k, v in out.items()}, out["image_grid_thw"].tolist())
cfg = Qwen2VLConfig(
    text_config={
        "vocab_size": len(tok),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        "max_position_embeddings": 512,
    },
    vision_config={
        "depth": 2,
        "embed_dim": 32,
        "hidden_size": 64,
        "num_heads": 2,
        "mlp_ratio": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "in_channels": 3,
    },
    image_token_id=ids["<|image_pad|>"],
    video_token_id=ids["<|video_pad|>"],
    vision_start_token_id=ids["<|vision_start|>"],
    vision_end_token_id=ids["<|vision_end|>"],
)
model = Qwen2VLForConditionalGeneration(cfg)
print(
    "params",
    sum(p.numel() for p in model.parameters()),
    [n for n, _ in model.named_children()],
    [n for n, _ in model.model.named_children()],
)
labels = out["input_ids"].clone()
labels[out["attention_mask"] == 0] = -100
res = model(**out, labels=labels)
res.loss.backward()
print("loss", float(res.loss), "finite", bool(torch.isfinite(res.loss)), "secs", round(time.time() - t0, 1))
sys.exit(0 if torch.isfinite(res.loss) else 1)
