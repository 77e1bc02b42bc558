"""`tunesmith chat`: a multi-turn terminal chat that streams replies; `/image PATH` attaches an image to the next
message (vision-language models), `/audio PATH` an audio (audio-language models), `clear` resets, `exit` quits."""

from __future__ import annotations

import sys

from tunesmith.data.media import IMAGE_PLACEHOLDER
from tunesmith.data.records import ASSISTANT, USER

IMAGE_COMMAND = "/image"
AUDIO_COMMAND = "/audio"


def with_placeholders(query: str, count: int, placeholder: str = IMAGE_PLACEHOLDER) -> str:
    """The message of a turn with `count` new images: as typed when it already holds one <image> per image (placed
    by the user), else with the <image> placeholders in front, where training data (LF's mllm_demo) puts them.
    The same for audios with placeholder <audio> (LF's mllm_audio_demo puts them in front too)."""
    if count and query.count(placeholder) != count:
        return placeholder * count + query
    return query


def run_chat(config, read=input, write=None) -> int:
    from tunesmith.data.audio import AUDIO_PLACEHOLDER
    from tunesmith.infer.audios import AudioInputError
    from tunesmith.infer.engine import ChatEngine
    from tunesmith.infer.images import ImageInputError, load_image

    write = write or sys.stdout.write
    engine = ChatEngine(config)
    history: list[dict] = []
    images: list = []  # every image of the conversation, in order (history's <image> placeholders)
    pending: list = []  # attached with /image, sent with the next message
    audios: list = []  # the same for audios (/audio), decoded
    pending_audios: list = []
    hint = f" `{IMAGE_COMMAND} PATH` attaches an image to your next message." if engine.takes_images else ""
    hint += f" `{AUDIO_COMMAND} PATH` attaches an audio to your next message." if engine.takes_audios else ""
    write(f"Chat with the model. Type `clear` to start over, `exit` to quit.{hint}\n")
    while True:
        try:
            query = read("\nUser: ")
        except EOFError:
            write("\n")
            return 0
        command = query.strip().lower()
        if command == "exit":
            return 0
        if command == "clear":
            history, images, pending, audios, pending_audios = [], [], [], [], []
            write("History cleared.\n")
            continue
        if command == IMAGE_COMMAND or command.startswith(IMAGE_COMMAND + " "):
            path = query.strip()[len(IMAGE_COMMAND) :].strip()
            try:
                if not engine.takes_images:
                    raise ImageInputError(engine.no_images)
                if not path:
                    raise ImageInputError(f"give the image's path: {IMAGE_COMMAND} PATH")
                pending.append(load_image(path, "image"))
            except ImageInputError as exc:
                write(f"Image not attached: {exc}\n")
                continue
            write(f"Image attached ({len(pending)}); now type your message.\n")
            continue
        if command == AUDIO_COMMAND or command.startswith(AUDIO_COMMAND + " "):
            path = query.strip()[len(AUDIO_COMMAND) :].strip()
            try:
                if not path:
                    raise AudioInputError(f"give the audio's path: {AUDIO_COMMAND} PATH")
                pending_audios.append(engine.load_audio(path, "audio"))
            except AudioInputError as exc:
                write(f"Audio not attached: {exc}\n")
                continue
            write(f"Audio attached ({len(pending_audios)}); now type your message.\n")
            continue
        if not query.strip():
            continue
        content = with_placeholders(with_placeholders(query, len(pending)), len(pending_audios), AUDIO_PLACEHOLDER)
        turn = {"role": USER, "content": content}
        try:
            prompt = engine.prepare([*history, turn], images=images + pending, audios=audios + pending_audios)
        except (ImageInputError, AudioInputError) as exc:  # e.g. a typed <image> without an image: the chat goes on
            write(f"Not sent: {exc}\n")
            continue
        history.append(turn)
        images, pending = images + pending, []
        audios, pending_audios = audios + pending_audios, []
        write("Assistant: ")
        reply = ""
        for piece in engine.stream(history, prompt=prompt):
            write(piece)
            reply += piece
            if hasattr(sys.stdout, "flush"):
                sys.stdout.flush()
        write("\n")
        history.append({"role": ASSISTANT, "content": reply})
