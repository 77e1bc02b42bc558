"""The Chat tab: loads the Train tab's model (and adapters) into the one inference engine and streams replies, with
an image upload for vision-language models and an audio upload for audio-language models; the sampling sliders start
from the config schema's GenerationArgs defaults."""

from __future__ import annotations

import mimetypes

from tunesmith.data.audio import AUDIO_PLACEHOLDER
from tunesmith.data.media import IMAGE_PLACEHOLDER
from tunesmith.errors import TunesmithError
from tunesmith.webui.texts import label, ui


def _text(content) -> str:
    """Chatbot message content (a string, or Gradio's list of typed parts) as plain text."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")


def _files(content) -> list[str]:
    """The files of a Chatbot message (Gradio's file parts), in order."""
    parts = content if isinstance(content, list) else [content]
    files = [part["file"] for part in parts if isinstance(part, dict) and part.get("type") == "file"]
    return [file["path"] if isinstance(file, dict) else str(file) for file in files]  # a client holds a plain path


AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac")  # where mimetypes may not know


def is_audio_file(path: str) -> bool:
    """An uploaded file is an audio by its name (the Audio upload keeps it; images never have these suffixes)."""
    return str(path).lower().endswith(AUDIO_SUFFIXES) or (mimetypes.guess_type(str(path))[0] or "").startswith(
        "audio/")


def _images(content) -> list[str]:
    """The image files of a Chatbot message, in order."""
    return [path for path in _files(content) if not is_audio_file(path)]


def _audios(content) -> list[str]:
    """The audio files of a Chatbot message, in order."""
    return [path for path in _files(content) if is_audio_file(path)]


def to_turns(history) -> tuple[list[dict], list[str], list[str]]:
    """The Chatbot history as the engine's turns, images and audios: a user message's images (audios) become
    <image> (<audio>) placeholders in front of its text, as `tunesmith chat` and LLaMA-Factory's data put them."""
    turns, images, audios = [], [], []
    for message in history:
        user = message["role"] == "user"
        found = _images(message["content"]) if user else []
        sounds = _audios(message["content"]) if user else []
        content = AUDIO_PLACEHOLDER * len(sounds) + IMAGE_PLACEHOLDER * len(found) + _text(message["content"])
        turns.append({"role": message["role"], "content": content})
        images += found
        audios += sounds
    return turns, images, audios


def generation_defaults() -> dict:
    """temperature, top_p and max_new_tokens as `tunesmith chat` and the API default them."""
    from tunesmith.config.schema import GenerationArgs

    return {key: GenerationArgs.model_fields[key].default for key in ("temperature", "top_p", "max_new_tokens")}


def build_chat_tab(gr, texts, train, workspace) -> tuple:
    """The tab's components and events; train: the Train tab's form (its model keys are what is loaded). Returns
    (load function, its inputs, its output), so the Runs tab can load a run for chat in one click."""
    state = {}
    defaults = generation_defaults()

    def words(key: str) -> dict:
        text, help_text = label("en", key)
        return {"label": text, "info": help_text, "elem_id": f"chat_{key}", "elem_classes": ["ts-field"]}

    with texts.label(gr.Tab(ui("en", "tab_chat"), elem_id="tab-chat"), "tab_chat"):
        with gr.Row(elem_classes=["ts-buttons"]):
            chat_load = texts.value(gr.Button(ui("en", "chat_load"), elem_id="chat_load"), "chat_load")
            chat_unload = texts.value(gr.Button(ui("en", "chat_unload")), "chat_unload")
            chat_state = gr.Markdown("", elem_id="chat_state")
        system = texts.label(gr.Textbox(label=ui("en", "chat_system")), "chat_system")
        tools = texts.label(gr.Textbox(label=ui("en", "chat_tools"), lines=2), "chat_tools")
        with gr.Row(elem_classes=["ts-grid"]):
            temperature = texts.field(gr.Slider(0, 1.5, value=defaults["temperature"], **words("temperature")),
                                      "temperature")
            top_p = texts.field(gr.Slider(0.01, 1.0, value=defaults["top_p"], **words("top_p")), "top_p")
            max_new_tokens = texts.field(gr.Slider(1, max(2048, defaults["max_new_tokens"]), step=1,
                                                   value=defaults["max_new_tokens"], **words("max_new_tokens")),
                                         "max_new_tokens")
        chatbot = gr.Chatbot(height=300, elem_id="chatbot")
        with gr.Row():
            image = texts.label(gr.Image(type="filepath", label=ui("en", "chat_image"), sources=["upload"],
                                         height=200, scale=1, elem_id="chat_image"), "chat_image")
            audio = texts.label(gr.Audio(type="filepath", format=None, label=ui("en", "chat_audio"),  # PyAV decodes
                                         sources=["upload"], scale=1, elem_id="chat_audio"), "chat_audio")
            query = texts.label(gr.Textbox(label=ui("en", "chat_input"), scale=4, elem_id="chat_input"),
                                "chat_input")
            send = texts.value(gr.Button(ui("en", "chat_send"), variant="primary", elem_id="chat_send"),
                               "chat_send")
            clear = texts.value(gr.Button(ui("en", "chat_clear")), "chat_clear")

    def load_chat(*values):
        from tunesmith.config.load import load_config
        from tunesmith.infer.engine import ChatEngine

        try:
            state["engine"] = ChatEngine(load_config(None, workspace.confine(train.collect(*values))))
        except TunesmithError as exc:
            return f"**{ui(texts.lang, 'status_failed')}**: {exc}"
        return f"{ui(texts.lang, 'chat_loaded')}: `{state['engine'].name}`"

    def unload_chat():
        state.pop("engine", None)
        return ui(texts.lang, "chat_unloaded")

    def respond(message, history, system_text, tools_text, temp, nucleus, limit, image_path=None, audio_path=None):
        """Streams the reply; an uploaded image (audio) goes with this message (a VL model; an audio model) and is
        then cleared."""
        from tunesmith.infer.images import ImageInputError, load_image

        engine = state.get("engine")
        history = list(history or [])
        if engine is None:
            history.append({"role": "assistant", "content": ui(texts.lang, "chat_need_model")})
            yield history, "", image_path, audio_path
            return
        turns, paths, sounds = to_turns(history)
        new = [image_path] if image_path else []
        heard = [audio_path] if audio_path else []
        turns.append({"role": "user", "content": AUDIO_PLACEHOLDER * len(heard) + IMAGE_PLACEHOLDER * len(new)
                      + message})
        try:
            if new and not engine.takes_images:
                raise ImageInputError(engine.no_images)
            audios = [engine.load_audio(path, "audio") for path in sounds + heard] if sounds or heard else None
            prompt = engine.prepare(turns, system_text or None, tools_text or None,
                                    [load_image(path, "image") for path in paths + new], audios)
        except TunesmithError as exc:  # a text-only model, an unreadable file, a prompt too long: said in the chat
            history.append({"role": "assistant", "content": f"**{ui(texts.lang, 'status_failed')}**: {exc}"})
            yield history, message, image_path, audio_path
            return
        attached = [*heard, *new]
        shown = [*({"path": path} for path in attached), message] if attached else message
        history += [{"role": "user", "content": shown}, {"role": "assistant", "content": ""}]
        for piece in engine.stream(turns, system=system_text or None, tools=tools_text or None, prompt=prompt,
                                   temperature=temp, top_p=nucleus, max_new_tokens=int(limit)):
            history[-1]["content"] += piece
            yield history, "", None, None

    chat_load.click(load_chat, train.inputs, chat_state, api_name="chat_load")
    chat_unload.click(unload_chat, None, chat_state, api_name="chat_unload")
    send.click(respond, [query, chatbot, system, tools, temperature, top_p, max_new_tokens, image, audio],
               [chatbot, query, image, audio], api_name="chat")
    clear.click(list, None, chatbot)
    return load_chat, train.inputs, chat_state
