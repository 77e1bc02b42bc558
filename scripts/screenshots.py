"""Screenshots of every web UI tab (en, and zh; the Train tab also at a phone's 390 px) for the README: previews the
dataset, runs a tiny LoRA (and a second one at another learning rate, from the CLI, for the Runs tab's overlaid
curves), an eval, a chat and an export.

Needs Debian's chromium and a CJK font for the Chinese pages (apt-get install -y chromium fonts-wqy-microhei).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO_DATA = REPO / "src" / "tunesmith" / "demo_data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(REPO / "docs"), help="folder for the PNG files (default docs/)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from playwright.sync_api import expect

    from tunesmith.demo import BASE_SIZE
    from tunesmith.model.tiny import ensure_tiny_model
    from tunesmith.webui.browser import browser_page, choose, chromium_path, fill, serve

    if chromium_path() is None:
        print("screenshots: needs Debian's chromium (apt-get install -y chromium)", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="tunesmith-shots-"))
    model = ensure_tiny_model(work / "tiny-llama", **BASE_SIZE)  # the demo's model and settings (README)
    run = work / "saves" / "tiny-lora"
    settings = {"model_name_or_path": model, "dataset_dir": DEMO_DATA, "dataset": "tunesmith_identity,tunesmith_skills",
                "template": "chatml", "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
                "cutoff_len": 128, "lora_rank": 16, "lr_scheduler_type": "constant_with_warmup", "max_steps": 300,
                "logging_steps": 5, "warmup_steps": 10, "report_to": "none"}
    (work / "second.yaml").write_text("".join(f"{key}: {value}\n" for key, value in settings.items()))
    second = subprocess.Popen([sys.executable, "-m", "tunesmith", "train", str(work / "second.yaml"),
                               "learning_rate=0.002", f"output_dir={work / 'saves' / 'tiny-lora-lr2e-3'}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # trains while the page does

    def shot(page, name: str, height: int | None = None) -> None:
        page.wait_for_timeout(800)  # let plots and tables finish drawing
        clip = {"x": 0, "y": 0, "width": page.viewport_size["width"], "height": height} if height else None
        page.screenshot(path=str(out / f"webui-{name}.png"), full_page=True, clip=clip)
        print(f"wrote {out / f'webui-{name}.png'}")

    with serve(work) as url, browser_page(width=1280, height=900) as page:
        page.set_default_timeout(120_000)
        expect.set_options(timeout=120_000)  # Playwright's 5 s is too short on a busy machine
        page.goto(url)
        choose(page, "model_family", "tunesmith-tiny")
        expect(page.locator("#template textarea")).to_have_value("chatml")  # filled from the family table
        fill(page, "model_name_or_path", model)
        fill(page, "dataset_dir", DEMO_DATA)
        fill(page, "dataset", "tunesmith_identity,tunesmith_skills")
        for key, value in {"learning_rate": 0.005, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
                           "cutoff_len": 128, "lora_rank": 16}.items():
            fill(page, key, value)
        sections = ("More training settings", "Logging, checkpoints and evaluation", "Output and scale-out")
        for section in sections:
            page.get_by_text(section, exact=True).click()
        choose(page, "lr_scheduler_type", "constant_with_warmup")
        for key, value in {"max_steps": 300, "logging_steps": 5, "warmup_steps": 10, "output_dir": run}.items():
            fill(page, key, value)
        for section in sections:  # closed again: a shorter page
            page.get_by_text(section, exact=True).click()
        page.get_by_role("button", name="Preview dataset").click()
        expect(page.locator("#data_preview")).to_contain_text("token lengths: p50")
        page.get_by_role("button", name="Preview command").click()
        page.get_by_role("button", name="Start", exact=True).click()
        expect(page.locator("#train_status")).to_contain_text("Finished", timeout=300_000)
        shot(page, "train")

        fill(page, "adapter_name_or_path", run)
        page.get_by_role("tab", name="Evaluate & Predict").click()
        fill(page, "eval-n_shot", 0)
        page.get_by_role("button", name="Preview command").click()
        page.get_by_role("button", name="Start evaluation").click()
        expect(page.locator("#eval_status")).to_contain_text("Finished", timeout=300_000)
        shot(page, "eval")

        page.get_by_role("tab", name="Chat").click()
        page.get_by_role("button", name="Load model", exact=True).click()
        expect(page.locator("#chat_state")).to_contain_text("loaded")
        fill(page, "chat_temperature", 0)  # greedy, as the demo answers
        fill(page, "chat_input", "Who are you?")
        page.get_by_role("button", name="Send").click()
        expect(page.locator("#chatbot [data-testid=bot]").first).to_contain_text("Tuney", timeout=30_000)
        shot(page, "chat")

        page.get_by_role("tab", name="Export").click()
        fill(page, "export_dir", work / "merged")
        choose(page, "export_dtype", "float32")
        page.get_by_role("button", name="Export", exact=True).click()
        expect(page.locator("#export_log textarea")).to_have_value(re.compile("exported to"), timeout=300_000)
        shot(page, "export")

        if second.wait() != 0:
            print("screenshots: the second run failed", file=sys.stderr)
            return 1
        page.get_by_role("tab", name="Runs").click()
        fill(page, "runs_folder", "saves")
        page.locator("#runs_refresh").click()
        table = page.locator("#runs_table")
        table.get_by_role("gridcell", name="tiny-lora", exact=True).click()  # a click on a row selects it
        choose(page, "runs_selected", "tiny-lora-lr2e-3")
        page.keyboard.press("Escape")
        expect(page.locator("#runs_curves").get_by_text("tiny-lora-lr2e-3")).to_be_visible()
        shot(page, "runs", height=1200)  # the table, the curves and the summary; not the long config below

        choose(page, "lang", "zh")
        expect(table).to_contain_text("最新损失")  # the column names follow the language
        page.get_by_role("tab", name="训练").click()
        expect(page.locator("#train_status")).to_contain_text("训练完成")
        shot(page, "train-zh")
        page.get_by_role("tab", name="评估与预测").click()
        shot(page, "eval-zh")

        choose(page, "lang", "en")
        page.get_by_role("tab", name="Train").click()
        page.get_by_text("Acceleration and precision", exact=True).click()  # a section of toggles, open
        page.set_viewport_size({"width": 390, "height": 844})  # a phone
        shot(page, "train-phone")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
