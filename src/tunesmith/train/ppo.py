"""Stage ppo: TRL 1.12's PPOTrainer on our policy, a reward model (an rm run or an HF classifier) and its value copy."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

from tunesmith.errors import ConfigError, ModelError

TRAIN_WITH_RM = "train one with stage: rm (its output folder is a reward model)"
PAD_TOKEN = "<|tunesmith_ppo_pad|>"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"reward_model: cannot read {path}: {exc}") from None


def reward_source(path: str) -> tuple[str, str | None]:
    """(model folder, LoRA adapter or None) of a reward model: an rm run's adapter, or a one-label classifier folder."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelError(f"reward_model folder not found: {path}; {TRAIN_WITH_RM}")
    adapter = folder / "adapter_config.json"
    if adapter.is_file():
        config = _read_json(adapter)
        if config.get("task_type") != "SEQ_CLS":
            raise ModelError(f"reward_model {path} is a LoRA adapter of a {config.get('task_type') or 'causal LM'} "
                             f"model, not a reward model (no value head); {TRAIN_WITH_RM}")
        base = config.get("base_model_name_or_path")
        if not base:
            raise ModelError(f"reward_model {path}: adapter_config.json does not name its base model "
                             "(base_model_name_or_path)")
        return base, str(folder)
    if not (folder / "config.json").is_file():
        raise ModelError(f"reward_model {path} holds neither a model (config.json) nor an adapter "
                         f"(adapter_config.json); {TRAIN_WITH_RM}")
    config = _read_json(folder / "config.json")
    architectures = config.get("architectures") or []
    labels = len(config.get("id2label") or {}) or config.get("num_labels", 2)
    if not any(name.endswith("ForSequenceClassification") for name in architectures) or labels != 1:
        raise ModelError(f"reward_model {path} is not a reward model ({', '.join(architectures) or 'no architecture'}"
                         f", {labels} labels; one score per sequence is needed); {TRAIN_WITH_RM}")
    return str(folder), None


def check(config) -> None:
    """Stage ppo's limits, checked before any launch and before any data or model loads: what TRL's PPO trainer cannot
    do (evaluate, resume, LoRA+, several processes, whitening below 8 replies), then the reward model's folder."""
    import os

    from tunesmith.train.workers import under_launcher

    method, data, train, launch = config.method, config.data, config.train, config.launch
    problems = []
    if data.val_size > 0 or data.eval_dataset:
        problems.append("stage ppo has no evaluation loop: remove `val_size` / `eval_dataset`")
    if train.resume_from_checkpoint not in (None, False, "", "false", "False"):
        problems.append("stage ppo cannot resume from a checkpoint (TRL's PPO trainer restarts): remove "
                        "`resume_from_checkpoint`")
    if method.loraplus_lr_ratio:
        problems.append("`loraplus_lr_ratio` does not apply to stage ppo (the value model shares the optimizer)")
    if launch.nproc_per_node > 1 or launch.nnodes > 1 or launch.use_ray or train.deepspeed:
        problems.append("stage ppo trains in one process: TRL 1.12's PPO trainer breaks under DDP/DeepSpeed (it "
                        "cannot reach its policy through the wrapper); remove nproc_per_node/nnodes/use_ray/"
                        "deepspeed")
    elif under_launcher() and int(os.environ["WORLD_SIZE"]) > 1:  # started by torchrun/accelerate directly
        problems.append("stage ppo trains in one process: TRL 1.12's PPO trainer breaks under DDP (it cannot reach "
                        "its policy through the wrapper); run tunesmith train without torchrun/accelerate")
    mini_batch = train.per_device_train_batch_size * train.gradient_accumulation_steps
    if method.ppo_whiten_rewards and mini_batch < 8:
        problems.append(f"`ppo_whiten_rewards` needs mini-batches of at least 8 replies (per_device_train_batch_size x "
                        f"gradient_accumulation_steps is {mini_batch})")
    if problems:
        raise ConfigError(f"{config.source}: " + "\n  ".join(problems))
    reward_source(config.method.reward_model)


def load_reward_model(config, tokenizer, quantize: bool = True):
    """The reward model, frozen: an rm adapter and reward_model_adapters merged (in that order), quantized to
    reward_model_quantization_bit (LLaMA-Factory's create_reward_model for reward_model_type full; a lora-type
    reward_model, an rm run's adapter, names its base model and is read the same way)."""
    from tunesmith.model.load import load_model
    from tunesmith.train.preference import adapter_list

    method = config.method
    base, adapter = reward_source(method.reward_model)
    adapters = ([adapter] if adapter else []) + adapter_list(config.lf_method.reward_model_adapters)
    bits = config.lf_method.reward_model_quantization_bit if quantize else None
    model_args = config.model.model_copy(update={"model_name_or_path": base, "quantization_bit": bits,
                                                 "adapter_name_or_path": adapters or None})
    method_args = method.model_copy(update={"finetuning_type": "lora" if adapters else "full"})
    return load_model(model_args, method_args, tokenizer, is_trainable=False, head="value")


def value_model_from(reward, config, tokenizer=None):
    """The value model: a copy of the reward model trained with the policy's finetuning_type (LoRA/Freeze/Full); a
    quantized reward model's value model is loaded again in full precision (it trains)."""
    from tunesmith.model.adapters import apply_method

    if config.lf_method.reward_model_quantization_bit:
        value = load_reward_model(config, tokenizer, quantize=False)
    else:
        value = copy.deepcopy(reward)
    model_args = config.model.model_copy(update={"adapter_name_or_path": None, "quantization_bit": None})
    value = apply_method(value, model_args, config.method, is_trainable=True)
    if config.method.finetuning_type == "freeze":
        value.score.requires_grad_(True)
    value.train()
    return value


def ppo_tokenizer(tokenizer):
    """The tokenizer TRL's PPO sees. TRL reads every pad id as padding (attention off), so a pad equal to eos (what
    templates set when a model has none) would blank each eos inside the prompts: that copy gets a pad of its own.
    The new id never reaches an embedding (TRL zeroes padded ids), so the model is not resized."""
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return tokenizer
    copied = copy.deepcopy(tokenizer)
    copied.add_special_tokens({"pad_token": PAD_TOKEN})
    return copied


def prompt_collator(tokenizer, model):
    """Prompts left-padded with the pad token, as TRL's PPO generation expects; answers are generated, not read."""
    import torch

    pad_id = ppo_tokenizer(tokenizer).pad_token_id

    def collate(features):
        rows = [torch.tensor(f["input_ids"]) for f in features]
        ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=pad_id, padding_side="left")
        return {"input_ids": ids}

    return collate


def ppo_keys(args, method, generation, prompts: int) -> dict:
    """TRL PPOConfig keys for LF's ppo_epochs/ppo_buffer_size/ppo_whiten_rewards and our generation keys.

    LLaMA-Factory's ppo_buffer_size mini-batches of per_device x accumulation make one batch of replies; in TRL that
    is a batch of (accumulation x buffer) micro-batches split into `buffer` mini-batches."""
    buffer = method.ppo_buffer_size
    accumulation = args.gradient_accumulation_steps * buffer
    rollout = args.per_device_train_batch_size * accumulation
    if prompts < rollout:
        raise ConfigError(f"stage ppo generates replies for {rollout} prompts at a time (per_device_train_batch_size x "
                          f"gradient_accumulation_steps x ppo_buffer_size) but the data has {prompts}: "
                          "add prompts or lower those keys")
    episodes = args.max_steps * rollout * args.world_size if args.max_steps > 0 else None
    return {"num_ppo_epochs": method.ppo_epochs, "whiten_rewards": method.ppo_whiten_rewards,
            "num_mini_batches": buffer, "gradient_accumulation_steps": accumulation, "total_episodes": episodes,
            "response_length": generation.max_new_tokens, "temperature": generation.temperature,
            "stop_token": "eos", "num_sample_generations": 0}


def ppo_trainer(*, config, model, args, processing_class, train_dataset, eval_dataset=None, **kwargs):
    """TRL's PPOTrainer with LF's ppo_epochs/ppo_buffer_size/ppo_whiten_rewards; replies follow the generation keys."""
    import warnings

    from transformers.trainer_utils import TrainOutput

    with warnings.catch_warnings():  # "experimental APIs may change": trl is pinned to 1.12.x, whose PPO this is
        warnings.simplefilter("ignore")
        from trl.experimental.ppo import PPOConfig, PPOTrainer

    from tunesmith.train.preference import load_ref_model, trl_args

    ppo_args = trl_args(PPOConfig, args, **ppo_keys(args, config.method, config.generation, len(train_dataset)))
    reward = load_reward_model(config, processing_class)
    value = value_model_from(reward, config, processing_class)

    class PolicyTrainer(PPOTrainer):
        def _save(self, output_dir=None, state_dict=None):
            # Checkpoints get the run's tokenizer, not the copy with the PPO-only pad token.
            used, self.processing_class = self.processing_class, processing_class
            try:
                super()._save(output_dir, state_dict)
            finally:
                self.processing_class = used

        def log(self, logs, start_time=None):
            if "loss/policy_avg" in logs:  # the objective TRL minimises, under the names our log and plot read
                loss = logs["loss/policy_avg"] + self.args.vf_coef * logs["loss/value_avg"]
                logs = {"loss": loss, "reward": logs["objective/scores"], "learning_rate": logs["lr"], **logs}
            super().log(logs, start_time)

        def train(self, resume_from_checkpoint=None, **unused):
            start = time.monotonic()
            super().train()
            history = self.state.log_history
            losses = [entry["loss"] for entry in history if "loss" in entry]
            rewards = [entry["reward"] for entry in history if "reward" in entry]
            mean_loss = sum(losses) / max(len(losses), 1)
            metrics = {"train_runtime": round(time.monotonic() - start, 4), "train_loss": mean_loss,
                       "train_reward": rewards[-1] if rewards else None}
            return TrainOutput(self.state.global_step, metrics["train_loss"], metrics)

    return PolicyTrainer(args=ppo_args, processing_class=ppo_tokenizer(processing_class), model=model,
                         ref_model=load_ref_model(config, processing_class), reward_model=reward, value_model=value,
                         train_dataset=train_dataset, **kwargs)
