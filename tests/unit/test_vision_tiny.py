"""A tiny random Qwen2-VL model trains a step on the LF demo images through the PIL image processor."""

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[3] / "shared" / "lf-demo-data" / "mllm_demo_data"


def test_expand_image_tokens_counts_and_refuses_mismatch():
    import torch

    from tunesmith.errors import DataError
    from tunesmith.model.vision import expand_image_tokens

    text = expand_image_tokens("<image>Who?", torch.tensor([[1, 2, 6]]), 2)
    assert text == "<|vision_start|>" + "<|image_pad|>" * 3 + "<|vision_end|>Who?"
    with pytest.raises(DataError, match="2 <image> placeholders but 1 images"):
        expand_image_tokens("<image><image>", torch.tensor([[1, 2, 6]]), 2)


@pytest.mark.skipif(not DATA.is_dir(), reason="LF demo data (../shared/lf-demo-data) absent")
def test_tiny_qwen2_vl_forward_backward_on_demo_images():
    import torch
    from PIL import Image

    from tunesmith.model.tiny import build_tokenizer
    from tunesmith.model.vision import (
        VL_TOKENS,
        add_media_tokens,
        expand_image_tokens,
        mm_token_type_ids,
        tiny_image_processor,
        tiny_qwen2_vl,
    )

    torch.manual_seed(0)
    tok = build_tokenizer()
    tok.pad_token = "<pad>"
    ids = add_media_tokens(tok, VL_TOKENS)
    proc = tiny_image_processor()
    images = [Image.open(DATA / f"{i}.jpg").convert("RGB") for i in (1, 2)]
    pix = proc(images=images, return_tensors="pt")
    assert pix["image_grid_thw"].shape == (2, 3)
    assert pix["pixel_values"].shape[0] == int(pix["image_grid_thw"].prod(-1).sum())
    texts = [
        expand_image_tokens(f"<image>{q}", pix["image_grid_thw"][i : i + 1], proc.merge_size)
        for i, q in enumerate(("Who?", "x"))
    ]
    batch = dict(tok(texts, return_tensors="pt", padding=True))
    batch.update(pix)
    batch["mm_token_type_ids"] = mm_token_type_ids(batch["input_ids"], ids)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model = tiny_qwen2_vl(ids, len(tok))
    out = model(**batch, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.model.visual.patch_embed.proj.weight.grad.abs().sum() > 0

    # LoRA on the language model only (LF's freeze_vision_tower default): a few steps, loss falls, vision untouched.
    from peft import LoraConfig, get_peft_model

    model.zero_grad()
    vision_before = model.model.visual.patch_embed.proj.weight.detach().clone()
    target = r"^(?!.*visual).*(?:q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=target))
    trained = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n and "visual" not in n for n in trained)
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=5e-2)
    losses = []
    for _ in range(5):
        loss = peft_model(**batch, labels=labels).loss
        losses.append(float(loss))
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert losses[-1] < losses[0]
    assert torch.equal(model.model.visual.patch_embed.proj.weight, vision_before)
