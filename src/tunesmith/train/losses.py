"""LLaMA-Factory's SFT losses: DFT (token loss x its probability), EAFT (x a top-20 entropy weight), ASFT (DFT + KL)."""

from __future__ import annotations

from tunesmith.data.records import IGNORE_INDEX


def _shifted(logits, labels):
    """Per-position logits (float32) and the next-token labels, flattened; the last position predicts nothing."""
    import torch.nn.functional as F

    labels = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].reshape(-1)
    return logits.float().reshape(-1, logits.size(-1)), labels.to(logits.device)


def _reduce(weighted, num_items_in_batch):
    """Sum over the gradient-accumulated batch's label tokens when that count is known, else the mean."""
    import torch

    if num_items_in_batch is None:
        return weighted.mean()
    total = num_items_in_batch.to(weighted.device) if torch.is_tensor(num_items_in_batch) else num_items_in_batch
    return weighted.sum() / total


def _token_losses(logits, labels):
    """Cross-entropy of each label token, with the valid-token mask (logits and labels already flattened)."""
    import torch.nn.functional as F

    per_token = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="none")
    valid = labels != IGNORE_INDEX
    return per_token[valid], valid


def dft_loss(outputs, labels, num_items_in_batch=None):
    """DFT: each token's cross-entropy times its (detached) probability, exp(-CE)."""
    import torch

    logits, labels = _shifted(outputs["logits"], labels)
    losses, valid = _token_losses(logits, labels)
    if not valid.any():
        return logits.sum() * 0.0
    return _reduce(losses * torch.exp(-losses.detach()), num_items_in_batch)


def eaft_loss(outputs, labels, num_items_in_batch=None, alpha: float = 1.0):
    """EAFT: each token's cross-entropy times (entropy of its top-20 distribution / 3) ** alpha, detached."""
    import torch

    logits, labels = _shifted(outputs["logits"], labels)
    losses, valid = _token_losses(logits, labels)
    if not valid.any():
        return logits.sum() * 0.0
    with torch.no_grad():
        top = torch.topk(logits[valid], k=min(20, logits.size(-1)), dim=-1).values
        log_p = top - torch.logsumexp(top, dim=-1, keepdim=True)
        entropy = -(log_p.exp() * log_p).sum(dim=-1)
        weight = torch.pow(entropy / 3.0, alpha)
    return _reduce(losses * weight, num_items_in_batch)


def asft_loss(outputs, labels, ref_logits, alpha: float = 0.1):
    """ASFT: the DFT loss (mean over label tokens) plus alpha x KL(reference || policy) averaged over those tokens."""
    import torch.nn.functional as F

    logits = outputs["logits"].float()[:, :-1].reshape(-1, outputs["logits"].size(-1))
    ref = ref_logits.float()[:, :-1].reshape(-1, ref_logits.size(-1))
    shift_labels = labels[:, 1:].reshape(-1).to(logits.device)
    losses, valid = _token_losses(logits, shift_labels)
    if not valid.any():
        return logits.sum() * 0.0
    dft = (losses * (-losses.detach()).exp()).mean()
    kl = F.kl_div(F.log_softmax(logits, dim=-1), F.softmax(ref, dim=-1), reduction="none").sum(dim=-1)
    mask = valid.float()
    return dft + alpha * (kl * mask).sum() / mask.sum()


def sft_trainer(*, config, model, **kwargs):
    """transformers' Seq2SeqTrainer with the DFT, EAFT or ASFT loss (LLaMA-Factory's order: DFT, then EAFT, then
    ASFT, when several are on). ASFT's reference is `ref_model` (with its adapters/quantization) if given; else the
    base model with the LoRA adapter switched off, or a frozen copy of the starting model."""
    import functools

    from transformers import Seq2SeqTrainer

    method = config.lf_method
    if method.use_dft_loss:
        return Seq2SeqTrainer(model=model, compute_loss_func=dft_loss, **kwargs)
    if method.use_eaft_loss:
        return Seq2SeqTrainer(
            model=model, compute_loss_func=functools.partial(eaft_loss, alpha=method.eaft_alpha), **kwargs
        )
    return _asft_trainer(config, model, kwargs)


def _asft_trainer(config, model, kwargs):
    import contextlib

    import torch
    from transformers import Seq2SeqTrainer

    from tunesmith.train.preference import load_ref_model

    ref_model = load_ref_model(config, kwargs.get("processing_class"))
    if ref_model is None and not hasattr(model, "disable_adapter"):  # full/freeze: the starting model, frozen
        from tunesmith.model.load import load_model

        method = config.method.model_copy(update={"finetuning_type": "full"})
        ref_model = load_model(config.model, method, kwargs.get("processing_class"), is_trainable=False)
    alpha = config.lf_method.asft_alpha

    class AnchoredTrainer(Seq2SeqTrainer):
        loss_is_scaled_for_ga = False  # a per-batch mean, as LLaMA-Factory's ASFT returns

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = dict(inputs)
            labels = inputs.pop("labels")
            with torch.no_grad():
                if ref_model is not None:
                    reference = ref_model
                    context = contextlib.nullcontext()
                else:
                    reference = self.accelerator.unwrap_model(model)
                    context = reference.disable_adapter()
                with context:  # a packed batch's position_ids keep each example to itself, as for the policy
                    keys = ("input_ids", "attention_mask", "position_ids", "use_cache")
                    ref_logits = reference(**{key: inputs[key] for key in keys if key in inputs}).logits
            outputs = model(**inputs)
            loss = asft_loss(outputs, labels, ref_logits, alpha)
            return (loss, outputs) if return_outputs else loss

    trainer = AnchoredTrainer(model=model, **kwargs)
    if ref_model is not None:
        trainer.ref_model = ref_model.to(trainer.args.device).eval()
    return trainer
