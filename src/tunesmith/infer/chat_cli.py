"""`tunesmith chat`: a multi-turn terminal chat that streams replies; `clear` resets, `exit` quits."""

from __future__ import annotations

import sys

from tunesmith.data.records import ASSISTANT, USER


def run_chat(config, read=input, write=None) -> int:
    from tunesmith.infer.engine import ChatEngine

    write = write or sys.stdout.write
    engine = ChatEngine(config)
    history: list[dict] = []
    write("Chat with the model. Type `clear` to start over, `exit` to quit.\n")
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
            history = []
            write("History cleared.\n")
            continue
        if not query.strip():
            continue
        history.append({"role": USER, "content": query})
        write("Assistant: ")
        reply = ""
        for piece in engine.stream(history):
            write(piece)
            reply += piece
            if hasattr(sys.stdout, "flush"):
                sys.stdout.flush()
        write("\n")
        history.append({"role": ASSISTANT, "content": reply})
