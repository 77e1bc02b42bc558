"""The closed set of training stages is the same everywhere, and each stage's limits live in its spec's check."""

import typing

import pytest

from tunesmith.cli import main
from tunesmith.config.load import load_config
from tunesmith.config.schema import MethodArgs
from tunesmith.data.encode import ENCODERS
from tunesmith.data.formats import STAGE_NEEDS
from tunesmith.errors import ConfigError, TunesmithError
from tunesmith.train.stages import STAGES, check_stage


def test_every_stage_is_known_to_the_schema_the_trainer_the_loader_and_the_encoder():
    schema = set(typing.get_args(MethodArgs.model_fields["stage"].annotation))
    assert schema == set(STAGES) == set(STAGE_NEEDS)
    assert {spec.encoding for spec in STAGES.values()} == set(ENCODERS)  # no encoder without a stage using it
    for spec in STAGES.values():
        assert callable(spec.make_collator) and callable(spec.make_trainer)  # every stage trains
        assert spec.head in ("causal_lm", "value")


PPO = "model_name_or_path: m\ndataset: d\noutput_dir: out\nstage: ppo\nreward_model: missing_rm\n"


@pytest.mark.parametrize(
    "extra, expected",
    [
        ("val_size: 0.1\n", "stage ppo has no evaluation loop"),
        ("resume_from_checkpoint: true\n", "stage ppo cannot resume"),
        ("loraplus_lr_ratio: 16\n", "`loraplus_lr_ratio` does not apply to stage ppo"),
        (
            "ppo_whiten_rewards: true\nper_device_train_batch_size: 2\n",
            "`ppo_whiten_rewards` needs mini-batches of at least 8 replies",
        ),
        ("nproc_per_node: 2\n", "stage ppo trains in one process"),
        ("use_ray: true\nray_num_workers: 2\n", "stage ppo trains in one process"),
        ("", "reward_model folder not found: missing_rm"),
    ],
)
def test_ppo_limits_are_its_spec_check_run_by_train_before_any_launch(tmp_path, capsys, extra, expected):
    path = tmp_path / "ppo.yaml"
    path.write_text(PPO + extra)
    config = load_config(path)  # a valid config: the limits are the stage's, not the schema's
    with pytest.raises(TunesmithError, match=expected.replace("(", r"\(")):
        check_stage(config)
    assert main(["train", str(path)]) == 2  # refused before torchrun/Ray start and before any data or model load
    err = capsys.readouterr().err
    assert expected in err and "launching" not in err and "Traceback" not in err


def test_ppo_refuses_a_direct_torchrun_of_several_processes(tmp_path, monkeypatch):
    path = tmp_path / "ppo.yaml"
    path.write_text(PPO)
    config = load_config(path)
    monkeypatch.setenv("LOCAL_RANK", "0")  # as torchrun sets them for its workers
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="run tunesmith train without torchrun/accelerate"):
        check_stage(config)
