"""Writes tests/assets/golden_audio/qwen2_audio.json: LLaMA-Factory 0.9.5's audio encodings (input_ids, labels, the
expanded <|AUDIO|> runs, input_features' shape and feature_attention_mask's sums) for the qwen2_audio template.

Dev tool only; it runs in the LF venv like scripts/make_vl_golden.py:

    PYTHONPATH=src /work/venvs/lf/bin/python scripts/make_audio_golden.py

The audios are tests/assets/golden_audio/audios/*.wav (written here, once, if absent: tones of several lengths,
rates and channel counts). LF 0.9.5 reads audio files with torchaudio, which cannot be installed beside torch 2.13,
so each file is decoded by tunesmith's PyAV decoder (data/audio.py: channels averaged, resampled to 16 kHz) and
handed to LF's plugin as the numpy array LF accepts in place of a file. The feature extractor is tunesmith's tiny
Whisper one (model/audio.py), which LF's mm_plugin calls as it would a model's.
"""

import copy
import json
import sys
import types
import wave
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_golden  # stubs torchaudio/av for LF's import; the real av is put back below

del sys.modules["av"]  # tunesmith's decoder needs the real PyAV; LF's plugin reads no video here

import numpy as np
from llamafactory.data import template as lf_template
from llamafactory.data.processor import SupervisedDatasetProcessor
from llamafactory.data.template import get_template_and_fix_tokenizer
from llamafactory.hparams import DataArguments

from tunesmith.data.audio import decode_audio
from tunesmith.model.audio import AUDIO_TOKENS, tiny_feature_extractor
from tunesmith.model.tiny import build_tokenizer, fingerprint
from tunesmith.model.vision import add_media_tokens

OUT = Path(__file__).resolve().parents[1] / "tests" / "assets" / "golden_audio"
NAME = "qwen2_audio"
# file -> (seconds, sample rate, channels, tone Hz)
AUDIOS = {
    "tone.wav": (0.5, 16000, 1, 440.0),
    "stereo.wav": (1.3, 44100, 2, 330.0),
    "long.wav": (3.0, 16000, 1, 220.0),  # longer than the tiny extractor's 2-second window: truncated
    "blip.wav": (0.05, 8000, 1, 880.0),  # one <|AUDIO|>: LF encodes it, tunesmith refuses it (too short to train)
    "chirp.wav": (0.25, 8000, 1, 660.0),
}
msg = make_golden.msg
RECORDS = {
    "one_audio": make_golden.record([msg("user", "<audio>What's that sound?")], [msg("assistant", "A tone.")]),
    "two_audios_two_turns": make_golden.record(
        [msg("user", "<audio>What is it?"), msg("assistant", "A low note."), msg("user", "And this?<audio>")],
        [msg("assistant", "A higher one, in stereo.")],
        system="Listen closely.",
    ),
    "long_audio": make_golden.record([msg("user", "Describe <audio> please.")], [msg("assistant", "Long.")]),
    "blip": make_golden.record([msg("user", "<audio>")], [msg("assistant", "Short.")]),
    "chirp": make_golden.record([msg("user", "Hear <audio>")], [msg("assistant", "A chirp.")]),
    "long_answer": make_golden.record(
        [msg("user", "<audio>Tell me all about it.")],
        [
            msg(
                "assistant",
                "It is a pure tone at four hundred and forty hertz, the note A that orchestras tune to, "
                "played softly for half a second and then cut off without any fade at all.",
            )
        ],
    ),
}
AUDIOS_OF = {
    "one_audio": ["tone.wav"],
    "two_audios_two_turns": ["long.wav", "stereo.wav"],
    "long_audio": ["long.wav"],
    "blip": ["blip.wav"],
    "chirp": ["chirp.wav"],
    "long_answer": ["tone.wav"],
}
# case -> (records, options: cutoff_len, train_on_prompt)
CASES = {
    "one_audio": (["one_audio"], {}),
    "two_audios_two_turns": (["two_audios_two_turns"], {}),
    "long_audio_window": (["long_audio"], {}),
    "resampled_chirp": (["chirp"], {}),
    "too_short_blip": (["blip"], {}),
    "batch_train_on_prompt": (["one_audio", "two_audios_two_turns"], {"train_on_prompt": True}),
    "answer_truncated": (["long_answer"], {"cutoff_len": 80}),
    "audio_truncated": (["one_audio"], {"cutoff_len": 34}),  # LF cuts the <|AUDIO|> run; tunesmith refuses it
}


def write_audios() -> None:
    (OUT / "audios").mkdir(parents=True, exist_ok=True)
    for name, (seconds, rate, channels, hz) in AUDIOS.items():
        path = OUT / "audios" / name
        if path.is_file():
            continue
        t = np.arange(int(seconds * rate)) / rate
        tone = 0.5 * np.sin(2 * np.pi * hz * t)
        planes = [tone * (1 - 0.5 * c) for c in range(channels)]  # channels differ: averaging them matters
        pcm = (np.stack(planes, axis=1) * 32767).astype("<i2")
        with wave.open(str(path), "wb") as out:
            out.setnchannels(channels)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes(pcm.tobytes())


def run_case(names, options):
    tokenizer = build_tokenizer()
    add_media_tokens(tokenizer, AUDIO_TOKENS)
    lf_template.TEMPLATES[NAME] = copy.deepcopy(make_golden.PRISTINE[NAME])
    args = DataArguments(
        template=NAME, cutoff_len=options.get("cutoff_len", 1024), train_on_prompt=options.get("train_on_prompt", False)
    )
    template = get_template_and_fix_tokenizer(tokenizer, args)
    processor = types.SimpleNamespace(
        feature_extractor=tiny_feature_extractor(),
        audio_sampling_rate=16000,
        audio_bos_token="<|audio_bos|>",
        audio_eos_token="<|audio_eos|>",
        model_input_names=["input_features", "feature_attention_mask"],
    )
    waves = {name: decode_audio(OUT / "audios" / name, 16000) for name in AUDIOS}
    batch = {
        "_prompt": [copy.deepcopy(RECORDS[n]["prompt"]) for n in names],
        "_response": [copy.deepcopy(RECORDS[n]["response"]) for n in names],
        "_system": [RECORDS[n]["system"] for n in names],
        "_tools": [RECORDS[n]["tools"] for n in names],
        "_images": [None] * len(names),
        "_videos": [None] * len(names),
        "_audios": [[waves[audio] for audio in AUDIOS_OF[n]] for n in names],
    }
    output = SupervisedDatasetProcessor(
        template=template, tokenizer=tokenizer, processor=processor, data_args=args
    ).preprocess_dataset(batch)
    media = []
    for row, audios in enumerate(output["audios"]):
        inputs = template.mm_plugin.get_mm_inputs(
            [], [], audios, [0], [0], [len(audios)], [output["input_ids"][row]], processor
        )
        media.append(
            {
                "input_features_shape": list(inputs["input_features"].shape),
                "feature_attention_mask_shape": list(inputs["feature_attention_mask"].shape),
                "frames": inputs["feature_attention_mask"].sum(-1).tolist(),
            }
        )
    return {"input_ids": output["input_ids"], "labels": output["labels"], "media": media}


def main():
    write_audios()
    golden = {
        "template": NAME,
        "llamafactory": make_golden.lf_version,
        "tokenizer_fingerprint": fingerprint(build_tokenizer()),
        "samples": {name: len(decode_audio(OUT / "audios" / name, 16000)) for name in AUDIOS},
        "records": RECORDS,
        "audios_of": AUDIOS_OF,
        "cases": [],
    }
    for case, (names, options) in CASES.items():
        golden["cases"].append({"case": case, "records": names, "options": options, "output": run_case(names, options)})
    path = OUT / f"{NAME}.json"
    path.write_text(json.dumps(golden, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{path.name}: {len(golden['cases'])} cases, {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
