"""The `tunesmith` command: parses arguments and dispatches to the job modules; nothing heavy is imported here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from tunesmith import __version__
from tunesmith.errors import ConfigError, TunesmithError

CONFIG_HELP = "YAML config file (LLaMA-Factory key names)"
OVERRIDES_HELP = "overrides as key=value or --key value; they win over the file"


TRAIN_EPILOG = """launch options (also YAML keys; any config key works as key=value or --key value):
  --nproc-per-node N      processes on this node (GPUs, or CPU workers over gloo); relaunches under torchrun
  --nnodes N --node-rank R --master-addr HOST --master-port PORT   several nodes
  deepspeed=FILE.json     DeepSpeed ZeRO (configs in examples/deepspeed/)
  use_ray=true ray_num_workers=N   Ray Train workers (or USE_RAY=1 as in LLaMA-Factory; ray_address=... joins)

examples:
  tunesmith train examples/train_lora.yaml learning_rate=1e-4 num_train_epochs=2
  tunesmith train cfg.yaml --nproc-per-node 2 deepspeed=examples/deepspeed/ds_z2_config.json
  tunesmith train --model_name_or_path M --stage sft --dataset D ...   no YAML (LLaMA-Factory's flag form)
  tunesmith --verbose train cfg.yaml      keep the libraries' notices"""


def _add_config(parser: argparse.ArgumentParser, optional: bool = False) -> None:
    if optional:
        parser.add_argument("config", nargs="?", help=CONFIG_HELP)
    else:
        parser.add_argument("config", help=CONFIG_HELP)
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help=OVERRIDES_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunesmith",
        description="Fine-tune large language models end to end from one YAML file.",
    )
    parser.add_argument("--version", action="version", version=f"tunesmith {__version__}")
    parser.add_argument("--verbose", action="store_true", help="keep the libraries' notices that tunesmith drops")
    jobs = parser.add_subparsers(dest="job", metavar="COMMAND")

    train = jobs.add_parser("train", help="fine-tune a model (stages pt, sft, rm, dpo, kto, ppo, grpo; LoRA, Freeze, Full; QLoRA)",
                            epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config(train)

    demo = jobs.add_parser("demo", help="build a tiny model, LoRA-tune it on bundled data, show before/after")
    demo.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    demo.add_argument("--steps", type=int, default=None, help="training steps (default: the demo config's)")

    chat = jobs.add_parser("chat", help="chat with a model (base + adapters) in the terminal; "
                           "`/image PATH` attaches an image (VL models)")
    _add_config(chat)
    api = jobs.add_parser("api", help="serve an OpenAI-compatible API (default http://127.0.0.1:8000/v1)")
    _add_config(api)
    evaluate = jobs.add_parser("eval", help="score a model on an MMLU/C-Eval/CMMLU-style benchmark, or predict "
                               "with generation (BLEU/ROUGE)")
    _add_config(evaluate, optional=True)
    export_model = jobs.add_parser("export", help="merge LoRA adapters into the base model and save it")
    _add_config(export_model)
    estimate = jobs.add_parser("estimate", help="memory per device and training time, before a run (no weights load)")
    estimate.add_argument("--throughput", help="tokens per second, for the time estimate")
    estimate.add_argument("--measure-steps", help="measure the throughput with this many real training steps")
    _add_config(estimate)

    webui = jobs.add_parser("webui", help="the whole workflow in the browser (Gradio), English and Chinese")
    webui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    webui.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    webui.add_argument("--share", action="store_true", help="also open a public Gradio share link (needs --auth)")
    webui.add_argument("--auth", action="append", metavar="USER:PASSWORD", help="login required (repeatable; also "
                       "$TUNESMITH_WEBUI_AUTH); needed for any --host beyond 127.0.0.1/::1/localhost and for --share")
    webui.add_argument("--auth-file", metavar="FILE", help="file of user:password lines allowed to log in")
    webui.add_argument("--root", default=".", help="workspace: every path the page reads or writes is inside this "
                       "folder (default: the current folder)")
    webui.add_argument("--trust-remote-code", action="store_true", help="let the page turn on trust_remote_code "
                       "(runs code shipped with models); refused otherwise")

    runs = jobs.add_parser("runs", help="list the training runs under a folder: status, steps, losses, time, size")
    runs.add_argument("root", nargs="?", default=".", help="folder to look in (default: the current folder)")

    config = jobs.add_parser("config", help="inspect configuration keys and resolved configs")
    config_jobs = config.add_subparsers(dest="config_job", metavar="ACTION", required=True)
    config_jobs.add_parser("keys", help="list every key with its type, default and help")
    show = config_jobs.add_parser("show", help="print the resolved config of CONFIG + overrides")
    _add_config(show)

    data = jobs.add_parser("data", help="validate, preview and export the encoded training data")
    data_jobs = data.add_subparsers(dest="data_job", metavar="ACTION", required=True)
    check = data_jobs.add_parser("check", help="validate every record; counts, token lengths, truncation")
    _add_config(check)
    preview = data_jobs.add_parser("preview", help="show examples with the trained tokens marked")
    preview.add_argument("-n", type=int, default=3, help="how many examples (default 3)")
    _add_config(preview)
    export = data_jobs.add_parser("export", help="write every encoded training example as JSON lines")
    export.add_argument("--out", help="output .jsonl file (required)")
    _add_config(export)

    tiny = jobs.add_parser("tiny", help="build a tiny random-init model with a local tokenizer (tests, demos)")
    tiny.add_argument("out", help="output folder")
    tiny.add_argument("--arch", default="llama", help="llama, qwen2, qwen3, mistral, gemma, phi3, qwen2_vl, gemma3, "
                      "internvl, llava, llava_next (vision-language), qwen2_audio (audio-language) or "
                      "qwen2_5_omni (Qwen2.5-Omni's thinker: images and audios)")
    tiny.add_argument("--overwrite", action="store_true", help="replace an existing model in the folder")

    env = jobs.add_parser("env", help="print platform, Python, torch build, accelerators and package versions")
    env.add_argument("--json", action="store_true", help="print the same facts as JSON")
    return parser


def _split_overrides(args) -> list[str]:
    """The overrides after CONFIG; this command's own options written after CONFIG are taken out of them."""
    items = [item for item in (args.overrides or []) if item != "--"]
    own = {"-n": "n", "--out": "out", "--throughput": "throughput", "--measure-steps": "measure_steps"}
    kept, index = [], 0
    while index < len(items):
        item = items[index]
        name, _, value = item.partition("=")
        if name in own and hasattr(args, own[name]):
            if not value:
                index += 1
                value = items[index] if index < len(items) else ""
            setattr(args, own[name], int(value) if own[name] == "n" else value)
        else:
            kept.append(item)
        index += 1
    return kept


def _load(args, overrides: list[str] | None = None):
    """The Config of the command's CONFIG plus the overrides after it."""
    from tunesmith.config.load import load_config

    return load_config(args.config, _split_overrides(args) if overrides is None else overrides)


# One handler per command: each imports its job only when it runs, so `tunesmith --help` stays instant. A new command
# is a parser in build_parser, a handler here and a row in HANDLERS.
def _train(args) -> int:
    from tunesmith.train.launch import run_train

    overrides = _split_overrides(args)
    return run_train(args.config, overrides, _load(args, overrides), verbose=args.verbose)


def _demo(args) -> int:
    from tunesmith.demo import run_demo

    return run_demo(args.out, steps=args.steps)


def _chat(args) -> int:
    from tunesmith.infer.chat_cli import run_chat

    return run_chat(_load(args))


def _api(args) -> int:
    from tunesmith.api.app import run_api

    return run_api(_load(args))


def _eval(args) -> int:
    from tunesmith.evaluate.run import run_eval

    if args.config and ("=" in args.config or args.config.startswith("-")):  # no YAML: keys on the line only
        args.config, args.overrides = None, [args.config, *(args.overrides or [])]
    return run_eval(_load(args))


def _export(args) -> int:
    from tunesmith.export import run_export

    return run_export(_load(args))


def _webui(args) -> int:
    from tunesmith.webui.app import run_webui
    from tunesmith.webui.door import read_auth

    return run_webui(args.host, args.port, args.share, read_auth(args.auth, args.auth_file), args.root,
                     args.trust_remote_code)


def _config(args) -> int:
    from tunesmith.config.describe import print_keys, print_resolved

    if args.config_job == "keys":
        print_keys()
    else:
        print_resolved(_load(args))
    return 0


def _data(args) -> int:
    from tunesmith import data_job

    overrides = _split_overrides(args)  # takes -n/--out written after CONFIG
    if args.data_job == "export" and not args.out:
        raise ConfigError("`tunesmith data export` needs --out FILE.jsonl")
    config = _load(args, overrides)
    if args.data_job == "check":
        return data_job.check(config)
    if args.data_job == "preview":
        return data_job.preview(config, n=args.n)
    return data_job.export(config, args.out)


def _tiny(args) -> int:
    from tunesmith.model.tiny import save_tiny_model

    path = save_tiny_model(args.out, arch=args.arch, overwrite=args.overwrite)
    print(f"tiny {args.arch} model written to {path}")
    return 0


def _runs(args) -> int:
    from tunesmith.runs import run_runs

    return run_runs(args.root)


def _estimate(args) -> int:
    from tunesmith.estimate import run_estimate

    return run_estimate(_load(args), args.throughput, args.measure_steps)


def _env(args) -> int:
    from tunesmith.env import run_env

    return run_env(as_json=args.json)


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": _train,
    "demo": _demo,
    "chat": _chat,
    "api": _api,
    "eval": _eval,
    "export": _export,
    "webui": _webui,
    "config": _config,
    "data": _data,
    "tiny": _tiny,
    "env": _env,
    "runs": _runs,
    "estimate": _estimate,
}


def dispatch(args) -> int:
    return HANDLERS[args.job](args)


def _flags_only(argv: list[str]) -> list[str]:
    """LLaMA-Factory's flag-only form (`train --model_name_or_path X --stage sft`, no YAML): a `--` before the first
    flag lets argparse hand the flags on whole; load_config reads them as overrides."""
    at = next((i for i, item in enumerate(argv) if not item.startswith("-")), len(argv))  # the command
    if at < len(argv) and argv[at] in ("train", "chat", "api", "eval", "export", "config", "data"):
        at += 2 if argv[at] in ("config", "data") else 1  # past their action
        if at < len(argv) and argv[at].startswith("--") and argv[at] not in ("--", "--help", "--out"):
            return [*argv[:at], "--", *argv[at:]]
    return argv


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_flags_only(list(sys.argv[1:] if argv is None else argv)))
    if args.job is None:
        parser.print_help()
        return 0
    if not args.verbose:
        from tunesmith.logs import quiet_libraries

        quiet_libraries()
    try:
        return dispatch(args)
    except TunesmithError as exc:
        from tunesmith.train.workers import report_worker_error

        if not report_worker_error(str(exc)):  # a worker of `tunesmith train`'s launch: the launcher prints it once
            print(f"tunesmith: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tunesmith: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tunesmith config keys | head`: the reader left; not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's recipe: no second error at exit
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
