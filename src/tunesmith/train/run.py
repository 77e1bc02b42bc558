"""`tunesmith train`: the composition root from a validated config to a trained model in output_dir."""

from __future__ import annotations

import logging
from pathlib import Path

from tunesmith.config.load import Config, require, training_arguments
from tunesmith.train import checkpoints, launch, output_safety, outputs

log = logging.getLogger(__name__)


def setup_logging() -> None:
    logging.basicConfig(format="[%(levelname)s|%(name)s] %(message)s", level=logging.INFO)
    import transformers

    transformers.logging.set_verbosity_warning()


def run_training(config: Config) -> dict:
    """Trains as the config says and returns the final metrics; every output lands in output_dir."""
    require(config, "model_name_or_path", "dataset", "output_dir", job="train")
    from transformers import set_seed

    from tunesmith.data.pipeline import build_datasets
    from tunesmith.model.adapters import loraplus_optimizer, save_pissa_converted, save_pissa_init
    from tunesmith.model.load import load_model, load_tokenizer
    from tunesmith.train.callbacks import JsonlLogCallback, ResumeCallback
    from tunesmith.train.stages import stage_spec

    setup_logging()
    spec = stage_spec(config.method.stage, training=True)
    if spec.check:
        spec.check(config)
    output_dir = Path(config.training_kwargs()["output_dir"])
    resume = checkpoints.resolve_resume(output_dir, config.training_kwargs().get("resume_from_checkpoint"))
    resume_path = resume.path if resume else None  # None also when only a finished final save is there
    # Preflight, before any data or model load: writable folder, overwrite only of a previous run, disk space.
    outputs.check_output_dir(output_dir, config.output.overwrite_output_dir, resume is not None, config)
    from tunesmith.device import detect_device

    on_accelerator = detect_device() != "cpu"  # the one place that knows: cuda, npu, xpu, mps or cpu
    extra = {}
    if "dataloader_pin_memory" not in config.training_kwargs():
        extra["dataloader_pin_memory"] = on_accelerator  # pinning needs an accelerator
    extra.update(launch.worker_arguments(config, on_accelerator))  # CPU workers: DDP or DeepSpeed over gloo
    args = training_arguments(config, resume_from_checkpoint=resume_path, do_train=True, **extra)
    set_seed(args.seed)

    # config -> data -> model -> trainer -> outputs
    tokenizer = load_tokenizer(config.model)
    with args.main_process_first(desc="encoding the data"):  # rank 0 encodes (and caches); the others reuse it
        data = build_datasets(config, tokenizer, encoding=spec.encoding)
    model = load_model(config.model, config.method, tokenizer, is_trainable=True, cutoff_len=config.data.cutoff_len,
                       head=spec.head, batch_tokens=args.per_device_train_batch_size * config.data.cutoff_len)
    # Only now, with data and model known good, is output_dir cleared (overwrite) and created.
    if args.should_save:  # rank 0 owns the output folder
        outputs.prepare_output_dir(output_dir, config.output.overwrite_output_dir, resume is not None, config)
    optimizers = (None, None)
    if config.method.loraplus_lr_ratio:
        optimizers = (loraplus_optimizer(model, args, config.method.loraplus_lr_ratio,
                                         config.method.loraplus_lr_embedding), None)
    from tunesmith.data.collate import configure

    collator = spec.make_collator(tokenizer, model)
    configure(collator, config)  # sft: padding-free packing unless `packing: false`, rows of at most cutoff_len
    trainer = spec.make_trainer(
        config=config,
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[ResumeCallback(resume, output_dir), JsonlLogCallback(output_dir)],
        optimizers=optimizers,
    )
    output_safety.keep_secrets_out_of_pickles(trainer.args)  # training_args.bin holds no hub_token
    main_process = trainer.is_world_process_zero()
    if main_process and resume is None:  # a resumed run keeps its first record until it has trained (below)
        outputs.record_run(output_dir, config)
    pissa_convert = config.method.pissa_convert and main_process
    if pissa_convert and (resume is None or resume.starts_over):
        save_pissa_init(model, output_dir)
    try:
        metrics = trainer.train(resume_from_checkpoint=resume_path).metrics
    except checkpoints.RunFinished as finished:
        if finished.complete:  # resumed a finished run: report it, write nothing
            return checkpoints.finished_results(output_dir)
        metrics = checkpoints.finish_untrained(trainer)  # the checkpoint is at the last step: the final save is left
    if main_process and resume is not None:
        outputs.record_run(output_dir, config)
    model.config.use_cache = True  # training turned the KV cache off; the saved model is for inference
    outputs.save_final(trainer, tokenizer, output_dir)
    if pissa_convert:
        save_pissa_converted(model, output_dir)
    if resume is not None:
        metrics.update(checkpoints.resumed_metrics(trainer.state.log_history, resume, trainer.state.global_step,
                                                   metrics))
    metrics.update(train_samples=len(data.train), dropped_examples=data.dropped)
    if data.eval is not None:
        metrics.update(trainer.evaluate(), eval_samples=len(data.eval))
    if not main_process:
        return metrics
    trainer.save_state()
    if config.output.plot_loss:
        from tunesmith.train.plot import plot_losses

        plot_losses(output_dir)
    outputs.write_json(output_dir / "all_results.json", metrics)  # written last: the run is complete
    log.info("training finished; outputs in %s", output_dir)
    return metrics
