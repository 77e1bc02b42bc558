"""Stage grpo: TRL 1.12's GRPOTrainer on our policy, our encoded prompts and the config's reward functions."""

from __future__ import annotations

from tunesmith.errors import ConfigError


def check(config) -> None:
    """Stage grpo's limits, before any launch, data or model load: the reward functions resolve, the groups fit the
    batch, sampling is on; a reward_model folder is an rm run or a one-label classifier."""
    from tunesmith.train.rewards import reward_functions

    method, train, launch = config.method, config.train, config.launch
    problems = []
    processes = launch.nproc_per_node * launch.nnodes
    completions = train.per_device_train_batch_size * train.gradient_accumulation_steps * processes
    if completions % method.num_generations:
        problems.append(
            f"stage grpo scores groups of num_generations={method.num_generations} completions, but a "
            f"step generates {completions} (per_device_train_batch_size x gradient_accumulation_steps x "
            "processes): make that a multiple of num_generations"
        )
    evaluates = config.data.val_size > 0 or config.data.eval_dataset
    eval_completions = getattr(train, "per_device_eval_batch_size", 8) * processes
    if evaluates and eval_completions % method.num_generations:
        problems.append(
            f"stage grpo evaluates groups of num_generations={method.num_generations} completions, but an "
            f"eval batch holds {eval_completions} (per_device_eval_batch_size x processes): make that a "
            "multiple of num_generations"
        )
    if not config.generation.do_sample:
        problems.append(
            "stage grpo samples its completions: remove `do_sample: false` (greedy replies of one group "
            "are all the same, so no reward differs)"
        )
    if method.ref_model:
        problems.append(
            "stage grpo's reference is the initial policy (TRL's GRPOTrainer takes no ref_model): remove `ref_model`"
        )
    if method.loraplus_lr_ratio:
        problems.append("`loraplus_lr_ratio` does not apply to stage grpo yet")
    if problems:
        raise ConfigError(f"{config.source}: " + "\n  ".join(problems))
    reward_functions(config)  # names, files, functions and the regex, without loading any model
    if "reward_model" in method.reward_funcs:
        from tunesmith.train.ppo import reward_source

        reward_source(method.reward_model)


def grpo_keys(config) -> dict:
    """TRL GRPOConfig keys: the method's GRPO keys under TRL's names, sampling from the generation keys."""
    method, generation = config.method, config.generation
    return {
        "num_generations": method.num_generations,
        "max_completion_length": method.max_completion_length,
        "beta": method.beta,
        "epsilon": method.epsilon,
        "loss_type": method.loss_type,
        "temperature": generation.temperature,
        "top_p": generation.top_p,
        "top_k": generation.top_k,
        "repetition_penalty": generation.repetition_penalty,
        "log_completions": False,
    }


def grpo_trainer(
    *, config, model, args, processing_class, train_dataset, eval_dataset=None, data_collator=None, **kwargs
):
    """TRL's GRPOTrainer generating from our template-encoded prompt ids (no second tokenization of their text)."""
    from trl import GRPOConfig, GRPOTrainer

    from tunesmith.train.preference import trl_args
    from tunesmith.train.rewards import reward_functions

    try:
        grpo_args = trl_args(GRPOConfig, args, **grpo_keys(config))
    except ValueError as exc:  # TRL's own batch checks (e.g. the eval batch against num_generations)
        raise ConfigError(f"{config.source}: stage grpo: {exc}") from None
    reward_model = None
    if "reward_model" in config.method.reward_funcs:
        from tunesmith.train.ppo import load_reward_model

        reward_model = load_reward_model(config, processing_class)
    funcs = reward_functions(config, reward_model)
    processing = [processing_class if func is reward_model else None for func in funcs]

    class PromptIdsTrainer(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            self._prompt_ids = {row["prompt"]: row["prompt_ids"] for row in inputs}
            return super()._generate_and_score_completions(inputs)

        def _tokenize_prompts(self, prompts):
            return [self._prompt_ids[prompt] for prompt in prompts], None, {}

    return PromptIdsTrainer(
        model=model,
        reward_funcs=funcs,
        args=grpo_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processing_class,
        reward_processing_classes=processing,
        **kwargs,
    )
