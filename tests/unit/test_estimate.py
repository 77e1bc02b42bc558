"""The memory/time estimator: its arithmetic against hand-computed values, and its counts against a real load."""

import dataclasses
import json
import logging

from tunesmith.cli import main
from tunesmith.config.load import load_config
from tunesmith.model.memory import Shape, activation_bytes, build, count_shape, estimate
from tunesmith.train.run import announce_memory

TINY = Shape(
    parameters=1000,
    trainable=100,
    weight_bytes=4000.0,
    hidden=64,
    intermediate=128,
    layers=2,
    heads=4,
    kv_heads=2,
    head_dim=16,
    vocab=1024,
)


def test_activations_per_token_by_hand():
    # per layer: 2 norms x (in + out) 4h + q h + k, v 2 x 32 + attention out h + SwiGLU 4i = 960 floats = 3840 B;
    # head: V x (4 logits + 8 for the float32 loss) = 12,288 B; + the embedding output 256 B
    plain = activation_bytes(TINY, 1, 10, 4, checkpointing=False, eager=False)
    assert plain == 10 * (2 * 3840 + 12288 + 256)
    # checkpointing: each layer keeps its input (h x 4 B), one layer is recomputed at a time
    assert activation_bytes(TINY, 1, 10, 4, checkpointing=True, eager=False) == 10 * (2 * 256 + 3840 + 12288 + 256)
    # eager attention keeps heads x s float32 softmax values per token and layer
    assert activation_bytes(TINY, 1, 10, 4, checkpointing=False, eager=True) == plain + 10 * 2 * 4 * 10 * 4
    assert activation_bytes(TINY, 3, 10, 4, checkpointing=False, eager=False) == 3 * plain


def _config(tmp_path, **keys):
    return load_config(None, {"model_name_or_path": "m", **keys})


def test_optimizer_and_distributed_shares(tmp_path):
    full = estimate(_config(tmp_path, finetuning_type="full"), TINY, 10)
    assert (full.gradients, full.optimizer, full.weights) == (400, 800, 4000)  # fp32 grads, AdamW 2 x fp32 moments
    assert estimate(_config(tmp_path, optim="adamw_bnb_8bit"), TINY, 10).optimizer == 200
    assert estimate(_config(tmp_path, optim="sgd"), TINY, 10).optimizer == 0
    ddp = estimate(_config(tmp_path, nproc_per_node=4), TINY, 10)
    assert ddp.strategy.startswith("DDP") and ddp.gradients == 800  # + the all-reduce buckets
    ds = tmp_path / "z.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    half = dataclasses.replace(TINY, dtype="bfloat16")
    z2 = estimate(_config(tmp_path, nproc_per_node=4, deepspeed=str(ds)), half, 10)
    assert (z2.optimizer, z2.gradients, z2.weights) == ((800 + 400) / 4, 100, 4000)  # + fp32 master copy
    ds.write_text(
        json.dumps(
            {
                "zero_optimization": {
                    "stage": 3,
                    "offload_optimizer": {"device": "cpu"},
                    "offload_param": {"device": "cpu"},
                }
            }
        )
    )
    z3 = estimate(_config(tmp_path, nproc_per_node=4, deepspeed=str(ds)), TINY, 10)
    assert z3.weights == 0 and z3.optimizer == 0 and z3.host == 4000 / 4 + 800 / 4 and "offload" in z3.strategy
    # the peak: weights + optimizer + the larger of activations and gradients + the optimizer's temporaries
    assert full.peak == 4000 + 800 + max(full.activations, 400 + 400)


def test_counts_on_the_meta_device_match_a_real_load(tiny_model_dir):
    from tunesmith.model.load import count_parameters, load_model, load_tokenizer

    for keys in ({"finetuning_type": "lora"}, {"finetuning_type": "freeze"}, {"finetuning_type": "full"}):
        config = load_config(None, {"model_name_or_path": str(tiny_model_dir), **keys})
        shape = count_shape(config)
        real = load_model(config.model, config.method, load_tokenizer(config.model), is_trainable=True)
        assert (shape.trainable, shape.parameters) == count_parameters(real), keys
        assert shape.weight_bytes == sum(p.numel() * p.element_size() for p in real.parameters())
    qlora = count_shape(load_config(None, {"model_name_or_path": str(tiny_model_dir), "quantization_bit": 4}))
    assert qlora.lora_modules_per_layer == 7 and qlora.lora_rank == 8
    lora = count_shape(load_config(None, {"model_name_or_path": str(tiny_model_dir)}))
    assert qlora.weight_bytes < lora.weight_bytes


def test_time_from_the_data_and_a_throughput(tiny_model_dir):
    from tunesmith.model.memory import DataStats

    config = load_config(
        None,
        {
            "model_name_or_path": str(tiny_model_dir),
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 2,
            "num_train_epochs": 2,
        },
    )
    est = estimate(config, TINY, 10, DataStats(examples=10, tokens=1000, longest=10), tokens_per_second=100)
    assert est.steps == 6 and est.train_tokens == 2000 and est.seconds == 20  # ceil(10 / 4) = 3 steps an epoch


def test_cli_prints_the_table_and_train_prints_one_line(tmp_path, tiny_model_dir, capsys, caplog, monkeypatch):
    demo = __import__("tunesmith.demo", fromlist=["DEMO_DATA"]).DEMO_DATA
    keys = [
        f"model_name_or_path={tiny_model_dir}",
        "dataset=tunesmith_identity",
        f"dataset_dir={demo}",
        "template=chatml",
    ]
    (tmp_path / "c.yaml").write_text("stage: sft\n")
    assert main(["estimate", str(tmp_path / "c.yaml"), *keys, "--throughput", "1000"]) == 0
    out = capsys.readouterr().out
    assert "peak per device" in out and "optimizer states" in out and "training tokens" in out and "time" in out
    assert (
        main(
            [
                "train",
                str(tmp_path / "c.yaml"),
                *keys,
                f"output_dir={tmp_path / 'o'}",
                "max_steps=1",
                "report_to=none",
                "save_strategy=no",
            ]
        )
        == 0
    )
    assert "memory estimate: peak" in capsys.readouterr().out
    config = load_config(tmp_path / "c.yaml", keys)
    monkeypatch.setattr("tunesmith.model.memory.free_memory", lambda: ("cpu", 1.0))  # a machine with one free byte
    with caplog.at_level(logging.WARNING, logger="tunesmith.train.run"):
        announce_memory(config, None)
    assert "exceeds the free memory" in caplog.text
    assert build(config).seq_len == config.data.cutoff_len  # no data: micro-batches of cutoff_len


def test_a_vision_language_model_is_counted_with_its_vision_tower(tiny_vl_model_dir):
    from tunesmith.model.load import count_parameters, load_model, load_tokenizer

    config = load_config(None, {"model_name_or_path": str(tiny_vl_model_dir), "template": "qwen2_vl"})
    shape = count_shape(config)
    real = load_model(config.model, config.method, load_tokenizer(config.model), is_trainable=True)
    assert (shape.trainable, shape.parameters) == count_parameters(real)
