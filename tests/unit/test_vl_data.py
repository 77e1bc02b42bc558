"""Images in training data: LF's `images` column with <image> placeholders, paths, checks and their encoding."""

import json
import shutil

import pytest

from tunesmith.data.loader import load_records
from tunesmith.errors import DataError


def test_sharegpt_and_alpaca_images_resolve_against_the_dataset_dir(vl_data_dir):
    records = load_records(["mllm_demo", "vl_alpaca"], str(vl_data_dir), "sft")
    assert records.column_names[-1] == "images"
    rows = records.to_list()
    assert [len(r["images"]) for r in rows] == [1, 1, 2, 1]
    assert rows[0]["images"] == [str(vl_data_dir / "images" / "red.png")]
    assert rows[3]["prompt"][0]["content"] == "<image>Name the colour."


def test_media_dir_moves_the_images(vl_data_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(vl_data_dir, data)
    media = tmp_path / "media"
    (data / "images").rename(media / "images" if media.mkdir() is None else media)
    with pytest.raises(DataError, match="not found"):
        load_records(["vl_alpaca"], str(data), "sft")
    records = load_records(["vl_alpaca"], str(data), "sft", media_dir=str(media))
    assert records[0]["images"] == [str(media / "images" / "red.png")]


def test_text_and_image_datasets_mix(vl_data_dir, tmp_path):
    (tmp_path / "text.json").write_text(json.dumps([{"instruction": "hi", "output": "hello"}]))
    records = load_records(["vl_alpaca", str(tmp_path / "text.json")], str(vl_data_dir), "sft")
    assert records["images"] == [[str(vl_data_dir / "images" / "red.png")], []]


def _broken(folder, rows):
    (folder / "vl_alpaca.json").write_text(json.dumps(rows))
    return folder


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"images": ["images/none.png"]}, "image 0 (images/none.png) not found"),
        ({"images": ["images/bad.png"]}, "is unreadable: PIL cannot read it"),
        ({"images": ["images/red.png", "images/red.png"]}, "1 <image> placeholders in its messages but 2 images"),
        ({"images": []}, "1 <image> placeholders in its messages but 0 images"),
    ],
)
def test_bad_images_name_the_file_record_and_medium(vl_data_dir, tmp_path, row, expected):
    data = tmp_path / "data"
    shutil.copytree(vl_data_dir, data)
    (data / "images" / "bad.png").write_text("not an image")
    good = {"instruction": "<image>Name it.", "input": "", "output": "red", "images": ["images/red.png"]}
    _broken(data, [good, {**good, **row}])
    with pytest.raises(DataError) as err:
        load_records(["vl_alpaca"], str(data), "sft")
    message = str(err.value)
    assert "vl_alpaca.json) record 1 (0-based" in message and "(medium: image)" in message and expected in message


def test_images_and_videos_in_one_record_load_both(vl_data_dir, tmp_path):
    from conftest import write_video

    data = tmp_path / "data"
    shutil.copytree(vl_data_dir, data)
    write_video(data / "videos" / "v.mp4", 4, 2)
    info = json.loads((data / "dataset_info.json").read_text())
    info["vl_alpaca"]["columns"]["videos"] = "videos"
    (data / "dataset_info.json").write_text(json.dumps(info))
    row = {"instruction": "<image><video>Same colour?", "input": "", "output": "no", "images": ["images/red.png"],
           "videos": ["videos/v.mp4"]}
    (data / "vl_alpaca.json").write_text(json.dumps([row]))
    record = load_records(["vl_alpaca"], str(data), "sft")[0]
    assert record["images"] == [str(data / "images" / "red.png")] and record["videos"] == [str(data / "videos" / "v.mp4")]


def test_images_expand_to_vision_tokens_in_the_encoding(vl_data_dir):
    from types import SimpleNamespace

    from tunesmith.data.pipeline import encode_records
    from tunesmith.data.template import get_template
    from tunesmith.data.vision import make_plugin
    from tunesmith.model.tiny import build_tokenizer
    from tunesmith.model.vision import VL_TOKENS, add_media_tokens, tiny_image_processor

    tokenizer = build_tokenizer()
    add_media_tokens(tokenizer, VL_TOKENS)
    template = get_template("qwen2_vl", tokenizer)
    plugin = make_plugin(template, tiny_image_processor())
    records = load_records(["mllm_demo"], str(vl_data_dir), "sft")
    args = SimpleNamespace(
        cutoff_len=1024,
        packing=None,
        train_on_prompt=False,
        mask_history=False,
        preprocessing_batch_size=1000,
        preprocessing_num_workers=None,
        overwrite_cache=True,
    )
    encoded = encode_records(records, "supervised", template, tokenizer, args, "encoding", plugin=plugin)
    pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    grids = [plugin.inputs(paths)["image_grid_thw"] for paths in records["images"]]
    for row, grid in zip(encoded, grids):
        assert row["input_ids"].count(pad) == int(grid.prod(-1).sum()) // 4
        assert all(label == -100 for token, label in zip(row["input_ids"], row["labels"]) if token == pad)
    assert encoded["image_paths"] == records["images"]
    with pytest.raises(DataError, match="has no image support"):
        make_plugin(get_template("qwen", tokenizer), tiny_image_processor())
