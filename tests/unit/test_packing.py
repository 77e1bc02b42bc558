"""Padding-free packing and label-only logits give the same losses and gradients as plain padded batches."""

import pytest

torch = pytest.importorskip("torch")

from tunesmith.data.collate import CausalLMCollator, causal_lm_collator, first_fit


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.train()  # the collator packs training batches only; dropout is 0 in the tiny model
    return model


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def features(lengths, prompt=3, seed=0):
    """Examples of the given lengths: random ids, the first `prompt` labels -100 (as an SFT prompt)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for length in lengths:
        ids = torch.randint(3, 1000, (length,), generator=generator).tolist()
        labels = [-100] * min(prompt, length - 1) + ids[min(prompt, length - 1) :]
        out.append({"input_ids": ids, "attention_mask": [1] * length, "labels": labels})
    return out


def padded(tokenizer, model, feats):
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100, padding=True)(feats)


def loss_and_grads(model, batch):
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return out.loss.detach(), grads


def example_losses(model, batch, spans):
    """Summed token cross-entropy per example; spans: (row, start, length) of each example in the batch."""
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    labels = batch["labels"]
    losses = []
    for row, start, length in spans:
        logit = logits[row, start : start + length - 1]
        target = labels[row, start + 1 : start + length]
        losses.append(float(torch.nn.functional.cross_entropy(logit, target, ignore_index=-100, reduction="sum")))
    return losses


def test_first_fit_keeps_rows_within_capacity():
    rows = first_fit([300, 200, 250, 40, 500, 10], 512)
    assert sorted(i for row in rows for i in row) == list(range(6))
    assert all(sum([300, 200, 250, 40, 500, 10][i] for i in row) <= 512 for row in rows)
    assert first_fit([600, 10], 512) == [[0], [1]]  # an over-long example gets a row of its own
    assert first_fit([600, 10, 300], None) == [[0, 1, 2]]  # no capacity: one row, in order


def test_packed_batch_has_restarting_positions_and_no_mask(tokenizer, model):
    collate = CausalLMCollator(tokenizer, model, capacity=32, label_logits=False)
    batch = collate(features([10, 20, 5]))
    assert "attention_mask" not in batch and batch["input_ids"].shape == (2, 30)  # rows 20 + 10, then 5
    assert batch["position_ids"][0].tolist() == [*range(20), *range(10)]
    assert batch["position_ids"][1].tolist() == [*range(5), *range(25)]  # the padding is a segment of its own
    assert batch["labels"][0, 20] == -100  # the first label of a packed example is never predicted
    assert (batch["labels"][1, 5:] == -100).all()
    model.eval()
    try:
        assert "attention_mask" in collate(features([10, 20, 5]))  # evaluation batches stay padded
    finally:
        model.train()


def test_packed_gives_the_same_per_example_losses(tokenizer, model):
    feats = features([17, 40, 9, 25, 33])
    lengths = [len(f["input_ids"]) for f in feats]
    alone = [example_losses(model, padded(tokenizer, model, [f]), [(0, 0, n)])[0] for f, n in zip(feats, lengths)]
    collate = CausalLMCollator(tokenizer, model, capacity=64, label_logits=False)
    batch = collate(feats)
    index = {}
    for row, members in enumerate(first_fit(lengths, 64)):
        start = 0
        for i in members:
            index[i] = (row, start, lengths[i])
            start += lengths[i]
    assert batch["input_ids"].size(0) < len(feats)  # really packed
    packed = example_losses(model, batch, [index[i] for i in range(len(feats))])
    assert packed == pytest.approx(alone, rel=1e-5, abs=1e-4)


@pytest.mark.parametrize("packing", [True, False])
def test_fast_paths_give_the_padded_loss_and_gradients(tokenizer, model, packing):
    feats = features([17, 40, 9, 25, 33], seed=1)
    reference_loss, reference_grads = loss_and_grads(model, padded(tokenizer, model, feats))
    collate = CausalLMCollator(tokenizer, model, capacity=64, packing=packing, label_logits=True)
    batch = collate(feats)
    assert batch["logits_to_keep"].dtype == torch.bool and batch["shift_labels"].numel() == sum(
        int((torch.tensor(f["labels"][1:]) != -100).sum()) for f in feats
    )
    loss, grads = loss_and_grads(model, batch)
    assert float(loss) == pytest.approx(float(reference_loss), rel=1e-5)
    assert grads.keys() == reference_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, reference_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_factory_uses_the_fast_collator_for_llama(tokenizer, model):
    assert isinstance(causal_lm_collator(tokenizer, model, capacity=64), CausalLMCollator)


@pytest.fixture()
def packed_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from tunesmith.model.packed_attention import NAME, use_packed_attention

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.train()
    assert use_packed_attention(model) and model.config._attn_implementation == NAME
    return model


def test_per_example_attention_gives_the_masked_rows_loss_and_gradients(tokenizer, packed_model, monkeypatch):
    from tunesmith.model import packed_attention

    feats = features([17, 40, 9, 25, 33], seed=2)
    batch = CausalLMCollator(tokenizer, packed_model, capacity=64, label_logits=True)(feats)
    seen = []
    segments = packed_attention._segments
    monkeypatch.setattr(packed_attention, "_segments", lambda *a: seen.append(segments(*a)) or seen[-1])
    loss, grads = loss_and_grads(packed_model, batch)
    # rows of 40+17+1 padding, 33+25, 9+49 padding: each example (and each row's padding) attends on its own
    assert seen[0] == [[(0, 40), (40, 57), (57, 58)], [(0, 33), (33, 58)], [(0, 9), (9, 58)]]
    packed_model.set_attn_implementation("sdpa")  # the block-diagonal mask over whole rows, as transformers builds it
    reference_loss, reference_grads = loss_and_grads(packed_model, batch)
    assert float(loss) == pytest.approx(float(reference_loss), rel=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, reference_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_per_example_attention_leaves_other_batches_and_the_saved_config_alone(tokenizer, packed_model, tmp_path):
    import json

    from tunesmith.model.packed_attention import _segments

    one_per_row = torch.arange(12).reshape(2, 6) % 6  # two rows, one example each
    query = torch.zeros(2, 4, 6, 8)
    assert _segments(one_per_row, query, query, {}, None) is None  # sdpa's own causal path
    packed = torch.tensor([[0, 1, 2, 0, 1, 2]])
    assert _segments(packed, query[:1], query[:1, :, :3], {}, None) is None  # decoding with a cache
    assert _segments(packed, query[:1], query[:1], {"sliding_window": 4}, None) is None  # sliding-window layers
    padded_batch = padded(tokenizer, packed_model, features([7, 12], seed=3))  # eval-style batch with a mask
    with torch.no_grad():
        ours = packed_model(**padded_batch).logits
        packed_model.set_attn_implementation("sdpa")
        plain = packed_model(**padded_batch).logits
    torch.testing.assert_close(ours, plain)
    packed_model.save_pretrained(tmp_path)
    assert "tunesmith" not in json.dumps(json.loads((tmp_path / "config.json").read_text()))


def test_one_row_per_batch_with_per_example_attention_gives_the_padded_loss_and_gradients(tokenizer, packed_model):
    """What training does when every layer attends per example (train/run.py): a batch is one row, no padding."""
    from tunesmith.model.packed_attention import one_row_per_batch

    assert one_row_per_batch(packed_model)
    feats = features([17, 40, 9, 25, 33], seed=4)
    batch = CausalLMCollator(tokenizer, packed_model, capacity=None, label_logits=True)(feats)
    assert batch["input_ids"].shape == (1, 124) and batch["position_ids"][0, 17:57].tolist() == list(range(40))
    loss, grads = loss_and_grads(packed_model, batch)
    packed_model.set_attn_implementation("sdpa")
    reference_loss, reference_grads = loss_and_grads(packed_model, padded(tokenizer, packed_model, feats))
    assert not one_row_per_batch(packed_model)  # plain sdpa: the mask over a whole row grows with its square
    assert float(loss) == pytest.approx(float(reference_loss), rel=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, reference_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_sliding_window_layers_keep_rows_within_cutoff():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tunesmith.model.packed_attention import one_row_per_batch, use_packed_attention

    config = Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, use_sliding_window=True, sliding_window=8,
                         max_window_layers=1, attn_implementation="sdpa")
    model = Qwen2ForCausalLM(config)
    assert use_packed_attention(model) and not one_row_per_batch(model)


@pytest.mark.parametrize(
    ("keys", "packs"),
    [({}, True), ({"packing": False}, False), ({"neftune_noise_alpha": 5}, False),
     ({"neftune_noise_alpha": 5, "packing": True}, True)],
)
def test_config_decides_packing_and_neftune_pads_unless_asked(tokenizer, model, tiny_model_dir, keys, packs):
    """NEFTune's noise is scaled by the row's length: its batches stay padded (per example, as LF) by default."""
    from tunesmith.config.load import load_config
    from tunesmith.data.collate import configure

    collate = CausalLMCollator(tokenizer, model, capacity=None)
    configure(collate, load_config(None, {"model_name_or_path": str(tiny_model_dir), "cutoff_len": 96, **keys}))
    assert collate.packing is packs and collate.capacity == 96


def test_a_packed_batch_builds_no_mask_for_per_example_attention(tokenizer, packed_model, monkeypatch):
    """transformers would build a (rows, 1, length, length) mask from packed position_ids; per-example attention
    never reads it, so none is built (one row of 32 K tokens: 1 GB); sliding-window masks still are."""
    from transformers import Qwen2Config

    from tunesmith.model import packed_attention

    received = []
    attention = packed_attention.packed_sdpa_attention
    def spy(module, query, key, value, mask, **kwargs):
        received.append(mask)
        return attention(module, query, key, value, mask, **kwargs)

    monkeypatch.setattr(packed_attention, "packed_sdpa_attention", spy)
    from transformers import AttentionInterface

    AttentionInterface.register(packed_attention.NAME, packed_attention.packed_sdpa_attention)
    batch = CausalLMCollator(tokenizer, packed_model, capacity=None, label_logits=True)(features([17, 40, 9], seed=5))
    try:
        loss_and_grads(packed_model, batch)
    finally:
        AttentionInterface.register(packed_attention.NAME, attention)
    assert received and all(mask is None for mask in received)
    packed = {"batch_size": 1, "q_length": 12, "kv_length": 12, "attention_mask": None, "allow_is_causal_skip": False,
              "config": packed_model.config}
    assert packed_attention.packed_sdpa_mask(**packed) is None
    sliding = Qwen2Config(use_sliding_window=True, sliding_window=8, max_window_layers=0, num_hidden_layers=2)
    for other in ({"local_size": 8}, {"config": sliding}, {"allow_is_causal_skip": True, "q_length": 12}):
        mask = packed_attention.packed_sdpa_mask(**{**packed, **other})
        assert other.get("allow_is_causal_skip") or mask.shape == (1, 1, 12, 12), other
