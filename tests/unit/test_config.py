"""Config loading: LLaMA-Factory keys, overrides, and a precise error for every mistake."""

import pytest

from tunesmith.cli import main
from tunesmith.config.load import load_config, parse_overrides
from tunesmith.errors import ConfigError


def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


BASE = "model_name_or_path: some/model\nstage: sft\nfinetuning_type: lora\ndataset: a,b\nlearning_rate: 1e-4\n"


def test_lf_style_yaml_is_read_into_groups(tmp_path):
    cfg = load_config(write(tmp_path, BASE + "lora_target: q_proj, v_proj\nwarmup_ratio: 0.1\nbf16: false\n"))
    assert cfg.model.model_name_or_path == "some/model"
    assert cfg.data.dataset == ["a", "b"]
    assert cfg.method.lora_target == ["q_proj", "v_proj"]
    assert cfg.train.learning_rate == pytest.approx(1e-4)  # YAML reads 1e-4 as a string; it is coerced
    assert cfg.training_kwargs()["warmup_steps"] == pytest.approx(0.1)  # old key mapped to the new one


def test_overrides_win_in_both_spellings(tmp_path):
    path = write(tmp_path, BASE)
    cfg = load_config(path, ["lora_rank=16", "--learning_rate", "5e-5", "--use_dora", "--lora_alpha=4"])
    assert cfg.method.lora_rank == 16
    assert cfg.train.learning_rate == pytest.approx(5e-5)
    assert cfg.method.use_dora is True
    assert cfg.method.lora_alpha == 4


def test_parse_overrides_reads_yaml_scalars():
    assert parse_overrides(["a=1", "b=true", "c=x,y", "d=0.5"]) == {"a": 1, "b": True, "c": "x,y", "d": 0.5}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["nonsense"])


@pytest.mark.parametrize(
    "extra, expected",
    [
        ("lora_rnak: 8\n", "unknown key 'lora_rnak'; did you mean 'lora_rank'"),
        ("learning_rate: -1\n", "key 'learning_rate': Input should be greater than 0"),
        ("lora_rank: abc\n", "key 'lora_rank': Input should be a valid integer"),
        ("finetuning_type: lorra\n", "key 'finetuning_type': Input should be 'lora', 'oft', 'freeze' or 'full'"),
        ("lr_scheduler_type: cosinee\n", "did you mean 'cosine'"),
        ("mask_history: true\ntrain_on_prompt: true\n", "`mask_history` and `train_on_prompt` cannot both be true"),
        ("finetuning_type: full\nuse_dora: true\n", "`use_dora` only applies to finetuning_type: lora"),
        ("val_size: 0.1\neval_dataset: c\n", "set either `val_size` or `eval_dataset`"),
        ("mix_strategy: interleave_under\ninterleave_probs: 0.5,0.6\n", "must sum to 1"),
        ("interleave_probs: 0.5,0.5\n", "needs mix_strategy interleave_under"),
        ("quantization_bit: 4\nfinetuning_type: full\n", "can only be trained with finetuning_type: lora"),
        ("stage: pt\ntrain_on_prompt: true\n", "only apply to stage: sft"),
        ("stage: dpo\npref_loss: kto_pair\n", "pref_loss kto_pair is not available"),
        ("stage: ppo\n", "stage ppo needs `reward_model`: a reward model folder"),
        ("stage: ppo\nreward_model: r\nppo_epochs: 0\n", "key 'ppo_epochs': Input should be greater than or equal"),
        ("video_fps: 0\n", "key 'video_fps': Input should be greater than 0"),
        ("video_maxlen: 0\n", "key 'video_maxlen': Input should be greater than or equal to 1"),
        ("image_max_pixels: -1\n", "key 'image_max_pixels': Input should be greater than or equal to 1"),
        ("ppo_target: 3.0\n", "LLaMA-Factory's `ppo_target` is not supported: TRL 1.12's PPO has no adaptive KL"),
        ("shift_attn: true\n", "LLaMA-Factory's `shift_attn` is not supported: LongLoRA shift attention"),
        ("deepspeed: missing/ds_z2.json\n", "deepspeed config file not found: missing/ds_z2.json"),
    ],
)
def test_bad_values_name_the_key(tmp_path, extra, expected):
    path = write(tmp_path, BASE + extra)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_yaml_syntax_error_shows_the_line(tmp_path):
    path = write(tmp_path, "stage: sft\nlora_rank: 8\n  bad: indent\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "line 3" in message and "invalid YAML" in message and "bad: indent" in message


def test_missing_and_non_mapping_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_cli_prints_errors_without_traceback(tmp_path, capsys):
    path = write(tmp_path, BASE + "lora_rnak: 8\n")
    assert main(["config", "show", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tunesmith: error:") and "lora_rank" in err and "Traceback" not in err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_train_requires_its_keys(tmp_path, capsys):
    path = write(tmp_path, "stage: sft\n")
    assert main(["train", str(path)]) == 2
    assert "`tunesmith train` needs `model_name_or_path`, `dataset`, `output_dir`" in capsys.readouterr().err


def test_config_keys_lists_every_group(capsys):
    assert main(["config", "keys"]) == 0
    out = capsys.readouterr().out
    for key in ("model_name_or_path", "lora_rank", "cutoff_len", "overwrite_output_dir", "learning_rate"):
        assert f"  {key}:" in out
    assert "[training (Hugging Face TrainingArguments)]" in out


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from tunesmith.cli import main; main(['--help'])"
    probe = code.replace("main(['--help'])", "build=__import__('tunesmith.cli').cli.build_parser(); "
                         "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"


def test_training_fields_table_matches_the_installed_transformers():
    from tunesmith.config.training_table import build_table, load_table

    assert load_table() == build_table(), (
        "src/tunesmith/config/training_fields.json is stale: run `python -m tunesmith.config.training_table`")


def test_validating_a_config_does_not_import_torch_or_transformers(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name_or_path: m\nlearning_rat: 1e-4\n")
    code = ("import sys\nfrom tunesmith.cli import main\nrc = main(['config', 'show', sys.argv[1]])\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\nraise SystemExit(rc)")
    done = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and "did you mean 'learning_rate'" in done.stderr
    assert done.stdout.strip() == "[]"


def test_config_keys_into_a_closed_pipe_exits_quietly():
    import subprocess
    import sys

    done = subprocess.run(f"'{sys.executable}' -m tunesmith config keys | head -1", shell=True, capture_output=True,
                          text=True, timeout=120, check=False)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr


def test_qlora_as_a_finetuning_type_says_what_qlora_is(tmp_path):
    with pytest.raises(ConfigError, match=r"QLoRA is `finetuning_type: lora` with `quantization_bit: 4`"):
        load_config(write(tmp_path, BASE.replace("finetuning_type: lora", "finetuning_type: qlora")))


def test_train_help_lists_every_stage_and_the_launch_options(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--nproc-per-node N" in out and "deepspeed=FILE.json" in out
    top = main.__globals__["build_parser"]().format_help()
    assert "stages pt, sft, rm, dpo, kto, ppo" in top


def test_a_bad_training_enum_value_lists_the_valid_ones_without_transformers(tmp_path):
    with pytest.raises(ConfigError, match=r"key 'lr_scheduler_type': Input should be 'linear', 'cosine'"):
        load_config(write(tmp_path, BASE + "lr_scheduler_type: cosin\n"))
