"""`tunesmith chat`: a multi-turn terminal chat that streams replies; `/image PATH` attaches an image to the next
message (vision-language models), `clear` resets, `exit` quits."""

from __future__ import annotations

import sys

from tunesmith.data.media import IMAGE_PLACEHOLDER
from tunesmith.data.records import ASSISTANT, USER

IMAGE_COMMAND = "/image"


def with_placeholders(query: str, count: int) -> str:
    """The message of a turn with `count` new images: as typed when it already holds one <image> per image (placed
    by the user), else with the <image> placeholders in front, where training data (LF's mllm_demo) puts them."""
    if count and query.count(IMAGE_PLACEHOLDER) != count:
        return IMAGE_PLACEHOLDER * count + query
    return query


def run_chat(config, read=input, write=None) -> int:
    from tunesmith.infer.engine import ChatEngine
    from tunesmith.infer.images import ImageInputError, load_image

    write = write or sys.stdout.write
    engine = ChatEngine(config)
    history: list[dict] = []
    images: list = []  # every image of the conversation, in order (history's <image> placeholders)
    pending: list = []  # attached with /image, sent with the next message
    hint = f" `{IMAGE_COMMAND} PATH` attaches an image to your next message." if engine.takes_images else ""
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
            history, images, pending = [], [], []
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
        if not query.strip():
            continue
        turn = {"role": USER, "content": with_placeholders(query, len(pending))}
        try:
            prompt = engine.prepare([*history, turn], images=images + pending)
        except ImageInputError as exc:  # e.g. a typed <image> without an attached image: the chat goes on
            write(f"Not sent: {exc}\n")
            continue
        history.append(turn)
        images, pending = images + pending, []
        write("Assistant: ")
        reply = ""
        for piece in engine.stream(history, prompt=prompt):
            write(piece)
            reply += piece
            if hasattr(sys.stdout, "flush"):
                sys.stdout.flush()
        write("\n")
        history.append({"role": ASSISTANT, "content": reply})
