"""Writes tests/assets/golden_omni/qwen2_omni.json: LLaMA-Factory 0.9.5's encodings of images and audios for the
qwen2_omni template (Qwen2.5-Omni's thinker): input_ids, labels, the expanded <|IMAGE|> and <|AUDIO|> runs,
pixel_values' shape, image_grid_thw, input_features' shape and the audios' frame counts.

Dev tool only; it runs in the LF venv like scripts/make_vl_golden.py and scripts/make_audio_golden.py:

    PYTHONPATH=src /work/venvs/lf/bin/python scripts/make_omni_golden.py

The images are tests/assets/golden_vl/images/*.png (scripts/make_vl_golden.py writes them) and the audios
tests/assets/golden_audio/audios/*.wav (scripts/make_audio_golden.py). LF's processor for Qwen2.5-Omni is
Qwen2_5OmniProcessor, which cannot be built without torchvision (its video processor); LF's Qwen2OmniPlugin reads only
its image_processor, feature_extractor and the settings LF's loader sets on it, so a stand-in holds tunesmith's tiny
PIL Qwen2-VL image processor and tiny Whisper feature extractor (model/omni.py's pair). As for Qwen2-Audio, LF's
torchaudio is absent, so each audio is decoded by tunesmith's PyAV decoder and handed to LF as an array.
"""

import copy
import json
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_golden  # stubs torchaudio/av for LF's import; the real av is put back below

del sys.modules["av"]  # tunesmith's decoder needs the real PyAV; LF's plugin reads no video here

from llamafactory.data import template as lf_template
from llamafactory.data.processor import SupervisedDatasetProcessor
from llamafactory.data.template import get_template_and_fix_tokenizer
from llamafactory.hparams import DataArguments

from tunesmith.data.audio import decode_audio
from tunesmith.model.audio import tiny_feature_extractor
from tunesmith.model.omni import OMNI_TOKENS
from tunesmith.model.tiny import build_tokenizer, fingerprint
from tunesmith.model.vision import add_media_tokens, tiny_image_processor

ASSETS = Path(__file__).resolve().parents[1] / "tests" / "assets"
OUT = ASSETS / "golden_omni"
IMAGE_DIR, AUDIO_DIR = ASSETS / "golden_vl" / "images", ASSETS / "golden_audio" / "audios"
NAME = "qwen2_omni"
msg = make_golden.msg
RECORDS = {
    "image_and_audio": make_golden.record(
        [msg("user", "<image><audio>What do you see and hear?")], [msg("assistant", "Red, and a tone.")]
    ),
    "image_only": make_golden.record([msg("user", "<image>What colour is this?")], [msg("assistant", "It is red.")]),
    "audio_only": make_golden.record([msg("user", "Hear <audio> now.")], [msg("assistant", "A chirp.")]),
    "text_only": make_golden.record([msg("user", "Hello")], [msg("assistant", "Hi.")]),
    "two_turns": make_golden.record(
        [
            msg("user", "<audio>What is it?<image>"),
            msg("assistant", "A long note and a blue square."),
            msg("user", "And these?<image><audio>"),
        ],
        [msg("assistant", "A big green one, in stereo.")],
        system="Look and listen.",
    ),
    "big_image_long_audio": make_golden.record(
        [msg("user", "Describe <image> and <audio> please.")], [msg("assistant", "Green, long.")]
    ),
    "long_answer": make_golden.record(
        [msg("user", "<audio><image>Tell me all about them.")],
        [
            msg(
                "assistant",
                "A red rectangle sixty-four pixels wide and a pure tone at four hundred and forty hertz, the note A "
                "that orchestras tune to, played softly for half a second and then cut off without any fade at "
                "all, so that the ear hears a small click at its end, which is the sound of the wave stopping.",
            )
        ],
    ),
}
MEDIA_OF = {  # record -> (images, audios)
    "image_and_audio": (["red.png"], ["tone.wav"]),
    "image_only": (["red.png"], []),
    "audio_only": ([], ["chirp.wav"]),
    "text_only": ([], []),
    "two_turns": (["blue.png", "big.png"], ["long.wav", "stereo.wav"]),
    "big_image_long_audio": (["big.png"], ["long.wav"]),
    "long_answer": (["red.png"], ["tone.wav"]),
}
# case -> (records, options: cutoff_len, train_on_prompt, image_max_pixels, image_min_pixels)
CASES = {
    "image_and_audio": (["image_and_audio"], {}),
    "image_only": (["image_only"], {}),
    "audio_only_resampled": (["audio_only"], {}),
    "two_turns_two_of_each": (["two_turns"], {}),
    "big_image_long_audio": (["big_image_long_audio"], {}),
    "tiny_image_min_pixels": (["image_only"], {"image_min_pixels": 96 * 96}),
    "batch_train_on_prompt": (["image_and_audio", "text_only", "audio_only", "two_turns"], {"train_on_prompt": True}),
    "answer_truncated": (["long_answer"], {"cutoff_len": 130}),
    "media_truncated": (["long_answer"], {"cutoff_len": 40}),  # LF cuts the <|AUDIO|> run; tunesmith refuses it
}


def run_case(names, options):
    tokenizer = build_tokenizer()
    add_media_tokens(tokenizer, OMNI_TOKENS)
    lf_template.TEMPLATES[NAME] = copy.deepcopy(make_golden.PRISTINE[NAME])
    args = DataArguments(
        template=NAME, cutoff_len=options.get("cutoff_len", 1024), train_on_prompt=options.get("train_on_prompt", False)
    )
    template = get_template_and_fix_tokenizer(tokenizer, args)
    image_processor = tiny_image_processor()
    processor = types.SimpleNamespace(  # what LF's loader sets on Qwen2_5OmniProcessor (patch_processor)
        image_processor=image_processor,
        video_processor=image_processor,
        feature_extractor=tiny_feature_extractor(),
        image_max_pixels=options.get("image_max_pixels", 768 * 768),
        image_min_pixels=options.get("image_min_pixels", 32 * 32),
        audio_sampling_rate=16000,
        use_audio_in_video=False,
        model_input_names=["pixel_values", "image_grid_thw", "input_features", "feature_attention_mask"],
    )
    batch = {
        "_prompt": [copy.deepcopy(RECORDS[n]["prompt"]) for n in names],
        "_response": [copy.deepcopy(RECORDS[n]["response"]) for n in names],
        "_system": [RECORDS[n]["system"] for n in names],
        "_tools": [RECORDS[n]["tools"] for n in names],
        "_images": [[str(IMAGE_DIR / image) for image in MEDIA_OF[n][0]] or None for n in names],
        "_videos": [None] * len(names),
        "_audios": [[decode_audio(AUDIO_DIR / audio, 16000) for audio in MEDIA_OF[n][1]] or None for n in names],
    }
    output = SupervisedDatasetProcessor(
        template=template, tokenizer=tokenizer, processor=processor, data_args=args
    ).preprocess_dataset(batch)
    media = []
    for row, (images, audios) in enumerate(zip(output["images"], output["audios"], strict=True)):
        images, audios = images or [], audios or []
        inputs = template.mm_plugin.get_mm_inputs(
            images, [], audios, [len(images)], [0], [len(audios)], [output["input_ids"][row]], processor
        )
        one = {}
        if images:
            one["pixel_values_shape"] = list(inputs["pixel_values"].shape)
            one["image_grid_thw"] = inputs["image_grid_thw"].tolist()
        if audios:
            one["input_features_shape"] = list(inputs["input_features"].shape)
            one["frames"] = inputs["feature_attention_mask"].sum(-1).tolist()
        one["inputs"] = sorted(inputs)  # what LF's collator hands the model besides the text
        media.append(one)
    return {"input_ids": output["input_ids"], "labels": output["labels"], "media": media}


def main():
    golden = {
        "template": NAME,
        "llamafactory": make_golden.lf_version,
        "tokenizer_fingerprint": fingerprint(build_tokenizer()),
        "records": RECORDS,
        "media_of": MEDIA_OF,
        "cases": [],
    }
    for case, (names, options) in CASES.items():
        golden["cases"].append({"case": case, "records": names, "options": options, "output": run_case(names, options)})
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{NAME}.json"
    path.write_text(json.dumps(golden, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{path.name}: {len(golden['cases'])} cases, {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
