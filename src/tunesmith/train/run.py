"""`tunesmith train`: the composition root from a validated config to a trained model in output_dir."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tunesmith.config.load import Config, require, training_arguments
from tunesmith.train import checkpoints, output_safety, outputs, run_status, workers

log = logging.getLogger(__name__)


def setup_logging() -> None:
    logging.basicConfig(format="[%(levelname)s|%(name)s] %(message)s", level=logging.INFO)
    import transformers

    transformers.logging.set_verbosity_warning()


def run_training(config: Config) -> dict:
    """Trains as the config says and returns the final metrics; every output lands in output_dir. A run that
    began training ends recorded in its tunesmith_status.json: finished, failed (with the error) or interrupted."""
    since, output_dir = time.time(), config.training_kwargs().get("output_dir")
    try:
        metrics = _run_training(config)
    except BaseException as error:
        run_status.stopped(output_dir, since, error)
        raise
    run_status.stopped(output_dir, since)
    return metrics


def _run_training(config: Config) -> dict:
    require(config, "model_name_or_path", "dataset", "output_dir", job="train")
    from transformers import set_seed

    from tunesmith.data.pipeline import build_datasets
    from tunesmith.model.adapters import loraplus_optimizer, save_pissa_converted, save_pissa_init
    from tunesmith.model.load import load_image_processor, load_model, load_tokenizer, save_image_processor
    from tunesmith.train import optimizers as custom_optimizers
    from tunesmith.train.callbacks import JsonlLogCallback, ResumeCallback, from_config
    from tunesmith.train.stages import check_stage

    setup_logging()
    spec = check_stage(config)
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
    extra.update(workers.worker_arguments(config, on_accelerator))  # CPU workers: DDP or DeepSpeed over gloo
    image_processor = load_image_processor(config.model)  # None for a text model
    from tunesmith.data.video import video_processor_for

    video = video_processor_for(config)  # Qwen-VL's, when the data maps videos (it needs torchvision); else None
    if image_processor is not None:
        from tunesmith.data.vision import check_stage as check_vision_stage

        check_vision_stage(config)  # sft or dpo
        extra["remove_unused_columns"] = False  # each example's image paths reach the collator
    from tunesmith.model.audio import load_feature_extractor

    feature_extractor = load_feature_extractor(config.model)  # an audio-language model's (Qwen2-Audio); else None
    if feature_extractor is not None:
        from tunesmith.data.audio import check_stage as check_audio_stage

        check_audio_stage(config)  # sft or dpo, no packing
        extra["remove_unused_columns"] = False  # each example's audio paths reach the collator
    args = training_arguments(config, resume_from_checkpoint=resume_path, do_train=True, **extra)
    set_seed(args.seed)
    if config.train.do_predict:  # predict runs after training (below): its checks come before any training
        from tunesmith.evaluate.predict import check_after_training

        check_after_training(config, args.world_size)

    # config -> data -> model -> trainer -> outputs
    tokenizer = load_tokenizer(config.model, config.lf_model)
    with args.main_process_first(desc="encoding the data"):  # rank 0 encodes (and caches); the others reuse it
        data = build_datasets(config, tokenizer, encoding=spec.encoding, image_processor=image_processor,
                              feature_extractor=feature_extractor, video=video)
    if args.should_save:  # rank 0 only
        announce_memory(config, data.train)
    model = load_model(config.model, config.method, tokenizer, is_trainable=True, cutoff_len=config.data.cutoff_len,
                       head=spec.head, lf_model=config.lf_model, lf_method=config.lf_method,
                       batch_tokens=args.per_device_train_batch_size * config.data.cutoff_len,
                       multimodal=config.multimodal)
    if config.lf_model.print_param_status and args.should_log:  # LLaMA-Factory's listing of every parameter
        for name, param in model.named_parameters():
            log.info("%s: %s %s, trainable %s", name, param.dtype, param.device, param.requires_grad)
    # Only now, with data and model known good, is output_dir cleared (overwrite) and created.
    if args.should_save:  # rank 0 owns the output folder
        outputs.prepare_output_dir(output_dir, config.output.overwrite_output_dir, resume is not None, config)
    optimizers = (custom_optimizers.build(config, model, args), None)  # GaLore, APOLLO, BAdam, Adam-mini, Muon
    if config.method.loraplus_lr_ratio:
        optimizers = (loraplus_optimizer(model, args, config.method.loraplus_lr_ratio,
                                         config.method.loraplus_lr_embedding), None)
    from tunesmith.data.collate import configure
    from tunesmith.data.omni import is_omni_plugin, omni_collator
    from tunesmith.model.fast_lora import use_fast_lora
    from tunesmith.model.fused_head import use_fused_head
    from tunesmith.model.packed_attention import one_row_per_batch, use_packed_attention
    from tunesmith.model.rmsnorm import use_recomputed_rmsnorm
    from tunesmith.model.swiglu import use_recomputed_swiglu

    if is_omni_plugin(data.plugin):  # Qwen2.5-Omni: pixel_values and input_features (data/omni.py)
        collator = omni_collator(config, tokenizer, model, data.plugin)
    elif feature_extractor is not None:  # an audio model: padded batches with input_features (data/audio.py)
        from tunesmith.data.audio import audio_collator

        collator = audio_collator(config, tokenizer, model, data.plugin)
    elif data.plugin is not None:  # a VL model: padded batches with pixel_values (no packing, see data/vision.py)
        from tunesmith.data.vision import vision_collator
        from tunesmith.data.vision_video import video_collator

        collator = video_collator(vision_collator(config, tokenizer, model, data.plugin), data.plugin, config)
    else:
        collator = spec.make_collator(tokenizer, model)
    configure(collator, config)  # sft: padding-free packing unless `packing: false`, rows of at most cutoff_len
    if getattr(collator, "packing", False):  # each packed example attends on its own, through sdpa's causal kernel
        use_packed_attention(model)
        if one_row_per_batch(model):  # so a batch can be one row: no padding at all, nothing across examples
            collator.capacity = None
            log.info("training batches: one packed row per batch (no padding)")
    if not args.deepspeed and not args.fsdp:  # ZeRO-3/FSDP gather a weight only when its own module runs
        use_fast_lora(model)
        if getattr(collator, "label_logits", False):  # logits only where labels are: the head and loss in chunks
            use_fused_head(model)
    use_recomputed_swiglu(model)  # one (tokens, intermediate) activation fewer per MLP
    use_recomputed_rmsnorm(model)  # Full/Freeze: the norms keep their input only
    trainer = spec.make_trainer(
        config=config,
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[ResumeCallback(resume, output_dir), JsonlLogCallback(output_dir), *from_config(config)],
        optimizers=optimizers,
    )
    custom_optimizers.attach(trainer, config)
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
    if image_processor is not None and feature_extractor is not None and main_process:  # Qwen2.5-Omni: one file
        from tunesmith.model.omni import save_omni_processors

        save_omni_processors(image_processor, feature_extractor, output_dir)
    elif image_processor is not None and main_process:  # a VL model's outputs reload with their image processor
        save_image_processor(image_processor, output_dir)
    elif feature_extractor is not None and main_process:  # an audio model's outputs reload with their extractor
        feature_extractor.save_pretrained(output_dir)
    if pissa_convert:
        save_pissa_converted(model, output_dir)
    if resume is not None:
        metrics.update(checkpoints.resumed_metrics(trainer.state.log_history, resume, trainer.state.global_step,
                                                   metrics))
    metrics.update(train_samples=len(data.train), dropped_examples=data.dropped)
    if data.eval is not None:
        metrics.update(trainer.evaluate(), eval_samples=len(data.eval))
    if config.train.do_predict:  # as LLaMA-Factory's sft workflow: the trained model answers eval_dataset
        from tunesmith.evaluate.predict import predict_after_training

        metrics.update(predict_after_training(config, tokenizer, model, output_dir))
    if not main_process:
        return metrics
    trainer.save_state()
    if config.output.plot_loss:
        from tunesmith.train.plot import plot_losses

        plot_losses(output_dir)
    outputs.write_json(output_dir / "all_results.json", metrics)  # written last: the run is complete
    log.info("training finished; outputs in %s", output_dir)
    return metrics


def announce_memory(config: Config, dataset) -> None:
    """One line before the model loads: the estimated peak per device; a warning when it exceeds the free memory."""
    from tunesmith.model import memory

    try:
        est = memory.build(config, dataset)
        device, free = memory.free_memory()
    except Exception as exc:  # an estimate must never stop a run
        log.info("memory estimate skipped: %s", exc)
        return
    size = memory.size
    print(f"memory estimate: peak {size(est.peak)} per device ({est.strategy}; weights {size(est.weights)}, "
          f"optimizer {size(est.optimizer)}, activations {size(est.activations)}); `tunesmith estimate` for more")
    if free is not None and est.peak > free:
        log.warning("the estimated peak (%s) exceeds the free memory on %s (%s): lower per_device_train_batch_size "
                    "or cutoff_len, use LoRA/QLoRA, or keep gradient checkpointing on", size(est.peak), device,
                    size(free))
