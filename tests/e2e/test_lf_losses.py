"""LLaMA-Factory's DFT/EAFT/ASFT SFT losses and DPO's BCO mix and LD-DPO: hand-computed values, then a few steps."""

import json
import math
from pathlib import Path

import pytest
import torch

from tunesmith.cli import main
from tunesmith.train import losses as sft_losses

DEMO_DATA = Path(__file__).resolve().parents[2] / "src" / "tunesmith" / "demo_data"
PAIRS = [
    ("Who are you?", "I am Tuney, a small assistant.", "I do not know."),
    ("Say hello.", "Hello! Nice to meet you.", "Go away."),
    ("Count to three.", "One, two, three.", "Three, one, two."),
    ("What colour is the sky?", "The sky is blue.", "The sky is green."),
]


@pytest.fixture(scope="module")
def batch(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.randint(3, 200, (2, 7))
    labels = ids.clone()
    labels[:, :3] = -100  # the prompt
    labels[1, 6] = -100
    return model(input_ids=ids).logits.detach(), labels


def _by_hand(logits, labels):
    """Per-token CE of the label tokens (next-token shift), with their logits, from plain loops."""
    out = []
    for row in range(labels.size(0)):
        for pos in range(labels.size(1) - 1):
            target = labels[row, pos + 1].item()
            if target != -100:
                log_p = torch.log_softmax(logits[row, pos], dim=-1)
                out.append((-log_p[target].item(), logits[row, pos]))
    return out


def test_dft_is_ce_times_probability(batch):
    logits, labels = batch
    tokens = _by_hand(logits, labels)
    expected = sum(ce * math.exp(-ce) for ce, _ in tokens) / len(tokens)
    assert sft_losses.dft_loss({"logits": logits}, labels).item() == pytest.approx(expected, rel=1e-5)
    summed = sft_losses.dft_loss({"logits": logits}, labels, num_items_in_batch=torch.tensor(10)).item()
    assert summed == pytest.approx(expected * len(tokens) / 10, rel=1e-5)  # normalised by the accumulated count


def test_eaft_weights_by_top20_entropy(batch):
    logits, labels = batch
    total, count = 0.0, 0
    for ce, row in _by_hand(logits, labels):
        top = sorted(row.tolist(), reverse=True)[:20]
        norm = math.log(sum(math.exp(v) for v in top))
        entropy = -sum(math.exp(v - norm) * (v - norm) for v in top)
        total += ce * (entropy / 3.0) ** 0.5
        count += 1
    value = sft_losses.eaft_loss({"logits": logits}, labels, alpha=0.5).item()
    assert value == pytest.approx(total / count, rel=1e-5)


def test_asft_is_dft_plus_kl_to_the_reference(batch):
    logits, labels = batch
    ref = logits + torch.randn_like(logits)
    tokens = _by_hand(logits, labels)
    dft = sum(ce * math.exp(-ce) for ce, _ in tokens) / len(tokens)
    kls = []
    for row in range(2):
        for pos in range(labels.size(1) - 1):
            if labels[row, pos + 1] != -100:
                q = torch.softmax(ref[row, pos], -1)
                kls.append((q * (q.log() - torch.log_softmax(logits[row, pos], -1))).sum().item())
    value = sft_losses.asft_loss({"logits": logits}, labels, ref, alpha=0.3).item()
    assert value == pytest.approx(dft + 0.3 * sum(kls) / len(kls), rel=1e-5)
    assert sft_losses.asft_loss({"logits": logits}, labels, logits, alpha=0.3).item() == pytest.approx(dft, rel=1e-5)


def sft(model_dir, out, *overrides, steps=3):
    config = Path(str(out) + ".yaml")
    config.write_text("stage: sft\n")
    args = [
        f"model_name_or_path={model_dir}",
        "dataset=tunesmith_identity",
        f"dataset_dir={DEMO_DATA}",
        "template=chatml",
        "cutoff_len=64",
        f"output_dir={out}",
        f"max_steps={steps}",
        "per_device_train_batch_size=2",
        "learning_rate=5e-3",
        "logging_steps=1",
        "save_strategy=no",
        "report_to=none",
        "seed=7",
        *overrides,
    ]
    assert main(["train", str(config), *args]) == 0
    state = json.loads((Path(out) / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


@pytest.mark.parametrize(
    "options",
    [
        ["use_dft_loss=true"],
        ["use_eaft_loss=true", "eaft_alpha=0.5"],
        ["use_asft_loss=true", "asft_alpha=0.1"],
        ["use_asft_loss=true", "finetuning_type=full"],
    ],
    ids="-".join,
)
def test_sft_losses_train(tiny_model_dir, tmp_path, options):
    """A few steps run and move the weights (DFT's loss on a random model is ~p * CE, tiny, so a falling loss over
    3 different batches is not what to pin; the update is)."""
    from safetensors.torch import load_file

    values = sft(tiny_model_dir, tmp_path / "run", *options)
    assert len(values) == 3 and all(math.isfinite(v) and v > 0 for v in values)
    if "finetuning_type=full" in options:
        trained, base = (
            load_file(tmp_path / "run" / "model.safetensors"),
            load_file(tiny_model_dir / "model.safetensors"),
        )
        assert any(not torch.equal(trained[name], base[name]) for name in base if name in trained)
    else:
        weights = load_file(tmp_path / "run" / "adapter_model.safetensors")
        assert any(torch.count_nonzero(value) for name, value in weights.items() if "lora_B" in name)


def test_asft_under_lora_starts_at_dft(tiny_model_dir, tmp_path):
    """LoRA starts as the identity, so the KL to the reference (adapter off) is 0 at step 1: ASFT == DFT there."""
    dft = sft(tiny_model_dir, tmp_path / "dft", "use_dft_loss=true", steps=1)
    asft = sft(tiny_model_dir, tmp_path / "asft", "use_asft_loss=true", "asft_alpha=1.0", steps=1)
    assert asft[0] == pytest.approx(dft[0], rel=1e-4)


# ---------------------------------------------------------------- dpo


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    rows = [{"instruction": q, "input": "", "chosen": c, "rejected": r} for q, c, r in PAIRS]
    (root / "ranking.json").write_text(json.dumps(rows))
    info = {
        "pairs": {
            "file_name": "ranking.json",
            "ranking": True,
            "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"},
        }
    }
    (root / "dataset_info.json").write_text(json.dumps(info))
    return root


def dpo(model_dir, data_dir, out, *overrides, steps=2):
    config = Path(str(out) + ".yaml")
    config.write_text("stage: dpo\n")
    args = [
        f"model_name_or_path={model_dir}",
        "dataset=pairs",
        f"dataset_dir={data_dir}",
        "template=chatml",
        "cutoff_len=64",
        f"output_dir={out}",
        f"max_steps={steps}",
        "per_device_train_batch_size=2",
        "learning_rate=1e-3",
        "logging_steps=1",
        "save_strategy=no",
        "report_to=none",
        "seed=7",
        *overrides,
    ]
    assert main(["train", str(config), *args]) == 0
    state = json.loads((Path(out) / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def test_bco_mix_at_the_reference(tiny_model_dir, pairs_dir, tmp_path):
    """At the reference every log-ratio is 0 and the running mean reward is 0: DPO's ln 2 and BCO's 2 ln 2, mixed
    (dpo + w bco) / (1 + w)."""
    values = dpo(tiny_model_dir, pairs_dir, tmp_path / "bco", "pref_bco_weight=0.5")
    assert values[0] == pytest.approx((math.log(2) + 0.5 * 2 * math.log(2)) / 1.5, abs=1e-4)
    assert all(math.isfinite(v) for v in values)


def test_ld_alpha_weights_the_tail_of_the_longer_reply():
    from tunesmith.train.preference import _ld_weighted

    per_token = torch.tensor([[0.0, -1.0, -2.0, -3.0, -4.0], [0.0, -1.0, -1.0, 0.0, 0.0]])
    mask = torch.tensor([[0, 1, 1, 1, 1], [0, 1, 1, 0, 0]])  # chosen 4 reply tokens, rejected 2
    got = _ld_weighted(per_token * mask, mask, 0.25)
    assert got.tolist() == pytest.approx([-1 - 2 + 0.25 * (-3 - 4), -2.0])
    assert _ld_weighted(per_token * mask, mask, None).tolist() == pytest.approx([-10.0, -2.0])


def test_ld_dpo_trains_with_a_full_reference(tiny_model_dir, pairs_dir, tmp_path):
    values = dpo(
        tiny_model_dir,
        pairs_dir,
        tmp_path / "ld",
        "ld_alpha=0.5",
        "finetuning_type=full",
        f"ref_model={tiny_model_dir}",
    )
    assert len(values) == 2 and all(math.isfinite(v) for v in values)


def test_lora_reference_model_adapters_and_quantization(tiny_model_dir, pairs_dir, tmp_path):
    """A first DPO run's adapter becomes the second run's reference (merged into ref_model, quantized to 4 bits)."""
    first = tmp_path / "first"
    dpo(tiny_model_dir, pairs_dir, first, "learning_rate=5e-2", steps=3)
    values = dpo(
        tiny_model_dir,
        pairs_dir,
        tmp_path / "second",
        f"ref_model={tiny_model_dir}",
        f"ref_model_adapters={first}",
        "ref_model_quantization_bit=4",
        steps=1,
    )
    # The policy is the base model and the reference has moved away from it: the loss is no longer ln 2
    assert math.isfinite(values[0]) and abs(values[0] - math.log(2)) > 1e-4
