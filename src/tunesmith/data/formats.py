"""Converts Alpaca, ShareGPT, OpenAI-messages and plain-text rows into canonical records, batch-wise, per stage."""

from __future__ import annotations

import dataclasses
import json
import logging
from functools import partial

from tunesmith.data.audio import AUDIOS, record_audios
from tunesmith.data.media import IMAGES, record_images
from tunesmith.data.records import (
    ANSWER_ROLES,
    ASSISTANT,
    FUNCTION,
    OBSERVATION,
    PROMPT_ROLES,
    SYSTEM,
    USER,
    make_record,
)
from tunesmith.data.registry import DatasetSpec
from tunesmith.data.video import VIDEOS, record_videos
from tunesmith.errors import DataError

log = logging.getLogger(__name__)

RECORD_COLUMNS = ("prompt", "response", "system", "tools", "kto_tag")
DROP = "_drop"  # per-row reason a record is skipped ("" when kept); removed before the records leave convert()
MEDIA_KEYS = ("images", "videos", "audios")  # LF's media columns (data/media.py, video.py, audio.py)
TOOL_RESULT_JOIN = "\n</tool_response>\n<tool_response>\n"  # LLaMA-Factory's join of parallel OpenAI tool results
NUM_PROC_MIN_ROWS = 10_000  # below this, worker processes cost more than they save
ID_COLUMNS = ("id", "uuid")  # a record's own id, named in messages next to its index
# Turns that must hold text: a system turn or a tool result may be empty, a question or an answer may not.
NON_EMPTY_ROLES = (USER, ASSISTANT, FUNCTION)


@dataclasses.dataclass(frozen=True)
class StageNeeds:
    """What a training stage needs from each record."""

    ranking: bool = False  # a chosen and a rejected answer (rm, dpo)
    kto: bool = False  # a true/false kto_tag per record
    answer: str = "required"  # the answer: "required", "optional" (ppo) or "none" (pt: text only)


STAGE_NEEDS = {
    "pt": StageNeeds(answer="none"),
    "sft": StageNeeds(),
    "rm": StageNeeds(ranking=True),
    "dpo": StageNeeds(ranking=True),
    "kto": StageNeeds(kto=True),
    "ppo": StageNeeds(answer="optional"),
    "grpo": StageNeeds(answer="optional"),  # the answer, when given, is the reference the accuracy reward checks
}


def stage_needs(stage: str) -> StageNeeds:
    if stage not in STAGE_NEEDS:
        raise DataError(f"unknown stage '{stage}' for data loading; allowed: {', '.join(STAGE_NEEDS)}")
    return STAGE_NEEDS[stage]


def record_features(with_drop: bool = False, images: bool = False, audios: bool = False, videos: bool = False):
    """The Arrow schema of canonical records, fixed so datasets of any source concatenate and interleave; datasets
    that map images (audios, videos) also carry an `images` (`audios`, `videos`) column of absolute paths."""
    from datasets import Features, List, Value

    message = {"role": Value("string"), "content": Value("string")}
    features = {"prompt": List(message), "response": List(message), "system": Value("string"),
                "tools": Value("string"), "kto_tag": Value("bool")}
    if images:
        features[IMAGES] = List(Value("string"))
    if audios:
        features[AUDIOS] = List(Value("string"))
    if videos:
        features[VIDEOS] = List(Value("string"))
    if with_drop:
        features[DROP] = Value("string")
    return Features(features)


def _where_registry(spec: DatasetSpec) -> str:
    return spec.registry or "dataset_info.json (register the file there to map its columns)"


def detect_format(spec: DatasetSpec, column_names: list[str], first_message: object = None) -> DatasetSpec:
    """For a dataset given as a path: sharegpt/openai when rows hold conversations or messages, alpaca with
    instruction columns, plain text with a `text` column. Registered datasets are returned unchanged."""
    if spec.formatting != "auto":
        return spec
    present = set(column_names)
    columns = {}
    messages = next((c for c in ("conversations", "messages") if c in present), None)
    if messages:
        formatting = "openai" if isinstance(first_message, dict) and "role" in first_message else "sharegpt"
        columns["messages"] = messages
    elif "instruction" in present:
        formatting = "alpaca"
        columns.update({k: c for k, c in (("prompt", "instruction"), ("query", "input"), ("response", "output"),
                                          ("history", "history")) if c in present})
        if "output" not in present and "solution" in present:  # prompts with a reference answer (GRPO data)
            columns["response"] = "solution"
    elif "text" in present:
        formatting = "alpaca"
        columns["prompt"] = "text"
    else:
        raise DataError(f"{spec.where()}: cannot tell its format from its columns ({', '.join(column_names)}); "
                        "expected instruction/input/output (alpaca), conversations or messages (sharegpt/openai), "
                        "or text (pre-training). Register it in dataset_info.json with \"columns\" to map yours")
    columns.update({key: key for key in ("system", "tools", "chosen", "rejected", "kto_tag", *MEDIA_KEYS)
                    if key in present})
    ranking = "chosen" in columns and "rejected" in columns
    return dataclasses.replace(spec, formatting=formatting, columns=columns, ranking=ranking)


def check_stage(spec: DatasetSpec, stage: str) -> None:
    """Refuses a dataset that cannot feed the stage (checked before any file is read)."""
    needs = stage_needs(stage)
    if spec.formatting == "auto":
        return  # known once its columns are seen
    registry = _where_registry(spec)
    if spec.formatting != "alpaca" and not (spec.tag("role_tag") and spec.tag("content_tag")):
        raise DataError(f"{spec.where()}: its \"tags\" block in {registry} must name \"role_tag\" and "
                        "\"content_tag\" (a tags block replaces the defaults, like LLaMA-Factory)")
    if needs.ranking and not (spec.ranking and spec.column("chosen") and spec.column("rejected")):
        raise DataError(f"{spec.where()} has no chosen/rejected columns; stage {stage} needs a ranking dataset (set "
                        f"\"ranking\": true and map \"chosen\" and \"rejected\" under \"columns\" in {registry})")
    if needs.kto and not spec.column("kto_tag"):
        raise DataError(f"{spec.where()} has no kto_tag column; stage kto needs one: map a true/false column as "
                        f"\"kto_tag\" under \"columns\" in {registry}")
    if spec.ranking and not needs.ranking:
        raise DataError(f"{spec.where()} is a ranking dataset (chosen/rejected answers), which stage {stage} cannot "
                        "use: train it with stage rm or dpo, or use a dataset without \"ranking\": true")
    if spec.column("kto_tag") and not needs.kto and not needs.ranking:
        raise DataError(f"{spec.where()} is KTO feedback data (it maps a kto_tag column); stage {stage} would also "
                        "train on its undesirable answers: use stage kto, or remove the kto_tag mapping")


def _needed_keys(spec: DatasetSpec, stage: str) -> list[str]:
    needs = stage_needs(stage)
    keys = ["prompt"] if spec.formatting == "alpaca" else ["messages"]
    if needs.ranking:
        keys += ["chosen", "rejected"]
    elif needs.answer == "required" and spec.formatting == "alpaca":
        keys.append("response")
    if needs.kto:
        keys.append("kto_tag")
    return keys


def check_columns(spec: DatasetSpec, stage: str, column_names: list[str]) -> None:
    """Every column the stage needs, and every column the registry maps explicitly, must exist in the data."""
    present = set(column_names)
    keys = set(_needed_keys(spec, stage)) | {k for k, v in (spec.columns or {}).items() if v}
    missing = [(key, spec.column(key)) for key in keys if spec.column(key) and spec.column(key) not in present]
    missing += [(key, None) for key in _needed_keys(spec, stage) if not spec.column(key)]
    if missing:
        wanted = ", ".join(f"column '{col}' ({key})" if col else f"column mapped as {key}"
                           for key, col in sorted(missing))
        hint = " (plain text trains with stage pt)" if spec.column("prompt") == "text" and stage != "pt" else ""
        raise DataError(f"{spec.where()} has no {wanted} for stage {stage}{hint}; its columns are "
                        f"{', '.join(column_names)}. Map them under \"columns\" in {_where_registry(spec)} "
                        f"(formatting {spec.formatting})")


class _Record:
    """Converts one row; every problem names the dataset, file and 0-based record index."""

    def __init__(self, spec: DatasetSpec, stage: str, row: dict, index: int, media_dir: str | None = None):
        self.spec, self.stage, self.row, self.index = spec, stage, row, index
        self.needs = stage_needs(stage)
        self.media_dir = media_dir

    def images(self, record: dict) -> list[str]:
        """The record's image paths, resolved against media_dir and checked (placeholders counted in the prompt and
        the first answer: the chosen one of ranking data, as LF validates each side)."""
        messages = record["prompt"] + record["response"][:1]
        return record_images(self.row.get(self.spec.column(IMAGES)), messages, self.media_dir,
                             lambda problem: self.fail(f"{problem} (medium: image)"))

    def audios(self, record: dict) -> list[str]:
        """The record's audio paths, resolved against media_dir and checked like its images."""
        messages = record["prompt"] + record["response"][:1]
        return record_audios(self.row.get(self.spec.column(AUDIOS)), messages, self.media_dir,
                             lambda problem: self.fail(f"{problem} (medium: audio)"))

    def videos(self, record: dict) -> list[str]:
        """The record's video paths, resolved against media_dir and checked like its images (each decodes)."""
        messages = record["prompt"] + record["response"][:1]
        return record_videos(self.row.get(self.spec.column(VIDEOS)), messages, self.media_dir,
                             lambda problem: self.fail(f"{problem} (medium: video)"))

    def fail(self, problem: str) -> DataError:
        from tunesmith.data.files import locate_record

        ids = "".join(f", {column} {self.row[column]!r:.60}" for column in ID_COLUMNS if self.row.get(column) is not None)
        located = locate_record(self.spec, self.index)
        if located:
            path, index = located
            return DataError(f"{self.spec.where()} file {path.name} record {index} (0-based{ids}; record "
                             f"{self.index} of the dataset): {problem}")
        return DataError(f"{self.spec.where()} record {self.index} (0-based{ids}): {problem}")

    def missing(self, key: str) -> DataError:
        expected = ", ".join(f"'{self.spec.column(k)}'" for k in _needed_keys(self.spec, self.stage))
        present = ", ".join(f"'{k}'" for k, v in self.row.items() if v is not None) or "none"
        return self.fail(f"has no value for '{self.spec.column(key)}' (the {key} column: null or absent); expected "
                         f"columns: {expected}; present in this record: {present}. Fill it in or delete the record")

    def empty(self, key: str) -> DataError:
        return self.fail(f"'{self.spec.column(key)}' (the {key} column) is empty; fill it in or delete the record")

    def text(self, key: str, required: bool = False) -> str | None:
        """The column's text; None when unmapped or null. A required text that is null or blank is an error."""
        column = self.spec.column(key)
        value = self.row.get(column) if column else None
        if value is None:
            if required:
                raise self.missing(key)
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # CSV cells like 4 arrive as numbers
        if not isinstance(value, str):
            raise self.fail(f"'{column}' (the {key} column) must be text, got {type(value).__name__} {value!r:.80}")
        if required and not value.strip():
            raise self.empty(key)
        return value

    def kto_tag(self) -> bool | None:
        if not self.needs.kto:
            return None
        column = self.spec.column("kto_tag")
        value = self.row.get(column)
        if value is None:
            raise self.missing("kto_tag")
        if not isinstance(value, bool):
            raise self.fail(f"'{column}' (the kto_tag column) must be true or false, got {value!r:.80}")
        return value

    def tools(self) -> str:
        column = self.spec.column("tools")
        value = self.row.get(column) if column else None
        if value is None:
            return ""
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    def alpaca(self) -> dict | str:
        prompt = []
        column = self.spec.column("history")
        history = self.row.get(column) if column else None
        if history is not None:
            if not isinstance(history, list):
                raise self.fail(f"'{column}' (the history column) must be a list of [query, answer] pairs")
            for turn, pair in enumerate(history):
                if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
                    raise self.fail(f"'{column}' item {turn} must be a [query, answer] pair of texts, got {pair!r:.80}")
                prompt += [{"role": USER, "content": pair[0]}, {"role": ASSISTANT, "content": pair[1]}]
        parts = [self.text("prompt"), self.text("query")]
        if parts == [None, None]:
            raise self.missing("prompt" if self.spec.column("prompt") else "query")
        # An empty input is normal; an empty instruction is LF's "input alone" prompt. Both empty is no question
        # at all. Pre-training keeps an empty text (a blank line), as LF does: it trains the eos alone.
        if self.needs.answer != "none" and not any(part and part.strip() for part in parts):
            key = "prompt" if self.spec.column("prompt") else "query"
            if parts[0] is None and key == "prompt":
                raise self.missing(key)
            raise self.empty(key)
        prompt.append({"role": USER, "content": "\n".join(part for part in parts if part)})  # "instruction\ninput"
        response = []
        if self.needs.ranking:
            response = [{"role": ASSISTANT, "content": self.text(key, required=True)} for key in ("chosen", "rejected")]
        elif self.needs.answer != "none":
            answer = self.text("response", required=self.needs.answer == "required")
            response = [] if answer is None else [{"role": ASSISTANT, "content": answer}]
        else:
            prompt = prompt[:1]  # pre-training reads the first user text, like LLaMA-Factory
        return make_record(prompt, response, self.text("system") or "", self.tools(), self.kto_tag())

    def roles(self) -> dict:
        keys = (("user_tag", USER), ("assistant_tag", ASSISTANT), ("observation_tag", OBSERVATION),
                ("function_tag", FUNCTION), ("system_tag", SYSTEM))
        return {self.spec.tag(tag): role for tag, role in keys if self.spec.tag(tag)}

    def message(self, message: object, label: str, roles: dict) -> dict:
        role_tag, content_tag = self.spec.tag("role_tag"), self.spec.tag("content_tag")
        tags_hint = f"set \"tags\" in {_where_registry(self.spec)} to the names your data uses"
        if not isinstance(message, dict):
            raise self.fail(f"{label} is a {type(message).__name__}, not an object with '{role_tag}' and "
                            f"'{content_tag}'")
        if role_tag not in message or message[role_tag] is None:
            raise self.fail(f"{label} has no '{role_tag}' (the role tag); its keys: {', '.join(map(str, message))}. "
                            f"{tags_hint.capitalize()}")
        role, content = message[role_tag], message.get(content_tag)
        calls = message.get("tool_calls")
        if self.spec.formatting == "openai" and calls and role in (self.spec.tag("assistant_tag"),
                                                                   self.spec.tag("function_tag")):
            if not isinstance(calls, list) or not all(isinstance(c, dict) and "function" in c for c in calls):
                raise self.fail(f"{label}: 'tool_calls' must be a list of {{\"function\": {{...}}}} objects")
            return {"role": FUNCTION, "content": json.dumps([c["function"] for c in calls], ensure_ascii=False)}
        if role not in roles:
            allowed = ", ".join(f"{tag!r} ({name})" for tag, name in roles.items())
            raise self.fail(f"{label} has unknown role {role!r} in '{role_tag}'; allowed: {allowed}. {tags_hint} "
                            "(user_tag, assistant_tag, observation_tag, function_tag, system_tag)")
        if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
            content = "".join(str(p.get("text", "")) for p in content)  # OpenAI content parts, text only
        if content is None:
            raise self.fail(f"{label} has no '{content_tag}' (the content tag: null or absent); its keys: "
                            f"{', '.join(map(str, message))}. Fill it in or delete the record; if your data names "
                            f"it differently, {tags_hint}")
        if not isinstance(content, str):
            raise self.fail(f"{label}: '{content_tag}' must be text, got {type(content).__name__} {content!r:.80}")
        if roles[role] in NON_EMPTY_ROLES and not content.strip():
            raise self.fail(f"{label} ({role!r}) has an empty '{content_tag}'; fill it in or delete the record (only "
                            "system turns and tool results may be empty)")
        return {"role": roles[role], "content": content}

    def sharegpt(self) -> dict | str:
        column = self.spec.column("messages")
        raw = self.row.get(column)
        if raw is None:
            raise self.missing("messages")
        if not isinstance(raw, list):
            raise self.fail(f"'{column}' (the messages column) must be a list of messages, got "
                            f"{type(raw).__name__}")
        if not raw:
            return "empty conversation"
        roles = self.roles()
        messages = [self.message(m, f"message {turn}", roles) for turn, m in enumerate(raw)]
        system = self.text("system") or ""
        if messages[0]["role"] == SYSTEM:
            system = messages.pop(0)["content"]
        if self.spec.formatting == "openai":
            messages = _merge_tool_results(messages)
        if not messages:
            return "empty conversation"
        if self.needs.answer == "none":
            return make_record(messages[:1], [], system, self.tools(), None)
        for turn, message in enumerate(messages):
            if message["role"] not in (PROMPT_ROLES if turn % 2 == 0 else ANSWER_ROLES):
                return "turns out of order"
        if (len(messages) % 2 == 1) != self.needs.ranking:
            return "ends on the wrong turn"
        if self.needs.ranking:
            prompt, response = messages, [self.answer(key, roles) for key in ("chosen", "rejected")]
        else:
            prompt, response = messages[:-1], messages[-1:]
        return make_record(prompt, response, system, self.tools(), self.kto_tag())

    def answer(self, key: str, roles: dict) -> dict:
        column = self.spec.column(key)
        value = self.row.get(column)
        if value is None:
            raise self.missing(key)
        message = self.message(value, f"'{column}'", roles)
        if message["role"] not in ANSWER_ROLES:
            raise self.fail(f"'{column}' must be an assistant or function-call message, got role {message['role']}")
        return message


def _merge_tool_results(messages: list[dict]) -> list[dict]:
    """OpenAI data gives one tool message per result; templates expect them as one observation turn."""
    merged = []
    for message in messages:
        if message["role"] == OBSERVATION and merged and merged[-1]["role"] == OBSERVATION:
            merged[-1] = {"role": OBSERVATION, "content": merged[-1]["content"] + TOOL_RESULT_JOIN + message["content"]}
        else:
            merged.append(message)
    return merged


def convert_batch(batch: dict, indices: list[int], *, spec: DatasetSpec, stage: str,
                  row_ids: list[int] | None = None, media_dir: str | None = None) -> dict:
    """A `datasets.map(batched=True, with_indices=True)` function: raw rows -> record columns plus a drop reason."""
    columns = (*RECORD_COLUMNS, IMAGES) if spec.column(IMAGES) else RECORD_COLUMNS
    columns = (*columns, AUDIOS) if spec.column(AUDIOS) else columns
    columns = (*columns, VIDEOS) if spec.column(VIDEOS) else columns
    out = {column: [] for column in (*columns, DROP)}
    keys = list(batch)
    empty = make_record([], [])
    empty[IMAGES] = empty[AUDIOS] = empty[VIDEOS] = []
    method = _Record.alpaca if spec.formatting == "alpaca" else _Record.sharegpt
    for position, values in zip(indices, zip(*batch.values())):
        index = row_ids[position] if row_ids is not None else position
        row = _Record(spec, stage, dict(zip(keys, values)), index, media_dir)
        record = method(row)
        reason = record if isinstance(record, str) else ""
        record = empty if reason else record
        if spec.column(IMAGES) and not reason:
            record[IMAGES] = row.images(record)
        if spec.column(AUDIOS) and not reason:
            record[AUDIOS] = row.audios(record)
        if spec.column(VIDEOS) and not reason:
            record[VIDEOS] = row.videos(record)
        for column in columns:
            out[column].append(record[column])
        out[DROP].append(reason)
    return out


def _first_message(rows, column: str | None):
    if not column or column not in rows.column_names:
        return None
    for value in rows.select(range(min(len(rows), 20)))[column]:
        if isinstance(value, list) and value:
            return value[0]
    return None


def _drop_skipped(records, spec: DatasetSpec, stage: str, row_ids: list[int] | None):
    reasons = list(records[DROP])
    skipped: dict[str, list[int]] = {}
    for position, reason in enumerate(reasons):
        if reason:
            skipped.setdefault(reason, []).append(row_ids[position] if row_ids is not None else position)
    records = records.remove_columns(DROP)
    if not skipped:
        return records
    total = sum(len(v) for v in skipped.values())
    detail = "; ".join(f"{len(ids)} {reason} (records {', '.join(map(str, ids[:5]))}{', ...' if len(ids) > 5 else ''})"
                       for reason, ids in skipped.items())
    if total == len(reasons):
        raise DataError(f"{spec.where()}: none of its {total} records can be used for stage {stage}: {detail} "
                        "(0-based). ShareGPT turns must alternate user/observation and assistant/function_call, and "
                        "end with an answer (a prompt turn for ranking data)")
    log.warning("%s: skipped %d of %d records, as LLaMA-Factory does: %s (0-based)", spec.where(), total,
                len(reasons), detail)
    return records.select([i for i, reason in enumerate(reasons) if not reason])


def convert(rows, spec: DatasetSpec, stage: str, *, row_ids: list[int] | None = None, num_proc: int | None = None,
            media_dir: str | None = None):
    """Maps raw rows onto canonical records for the stage. Fails on the first bad record, naming it; skips (with a
    warning) the records LLaMA-Factory skips: empty conversations and turns out of order. `row_ids` are the rows'
    indexes in the file when they were sampled, so messages point at the right record. Image paths are relative to
    `media_dir` (LF's default: the dataset_dir)."""
    if spec.formatting == "auto":
        column = "conversations" if "conversations" in rows.column_names else "messages"
        spec = detect_format(spec, rows.column_names, _first_message(rows, column))
    check_stage(spec, stage)
    check_columns(spec, stage, rows.column_names)
    if num_proc is not None and (num_proc <= 1 or len(rows) < NUM_PROC_MIN_ROWS):
        num_proc = None
    records = rows.map(
        partial(convert_batch, spec=spec, stage=stage, row_ids=row_ids, media_dir=media_dir),
        batched=True,
        with_indices=True,
        remove_columns=rows.column_names,
        features=record_features(with_drop=True, images=bool(spec.column(IMAGES)), audios=bool(spec.column(AUDIOS)),
                                 videos=bool(spec.column(VIDEOS))),
        num_proc=num_proc,
        desc=f"converting {spec.name}",
    )
    return _drop_skipped(records, spec, stage, row_ids)
