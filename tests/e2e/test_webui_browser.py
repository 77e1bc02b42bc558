"""The web UI in headless Chromium, driven like a person in Chinese: train a tiny LoRA, evaluate, chat, export."""

import re
from pathlib import Path

import pytest

from tunesmith.webui.browser import choose, chromium_path, fill

DEMO_DATA = Path(__file__).resolve().parents[2] / "src" / "tunesmith" / "demo_data"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium_path() is None, reason="needs Debian's Chromium at /usr/bin/chromium: "
                       "apt-get install -y chromium (bash scripts/test.sh installs it when run as root)"),
]


def test_train_evaluate_chat_export_in_the_browser(tmp_path, tiny_model_dir):
    import shutil

    from playwright.sync_api import expect

    from tunesmith.webui.browser import browser_page, serve

    model = shutil.copytree(tiny_model_dir, tmp_path / "model")  # the UI reads nothing outside its root, tmp_path
    out = tmp_path / "out"
    with serve(tmp_path) as url, browser_page() as page:  # workspace root: tmp_path
        page.set_default_timeout(30_000)
        expect.set_options(timeout=30_000)  # expect keeps Playwright's 5 s otherwise: too short on a loaded machine
        page.goto(url)
        # switch the page to Chinese: tab names, field labels and buttons change
        expect(page.get_by_role("tab", name="Train")).to_be_visible()
        expect(page.locator("#model_family")).to_contain_text("Model name")
        choose(page, "lang", "zh")
        expect(page.get_by_role("tab", name="训练")).to_be_visible()
        expect(page.locator("#model_family")).to_contain_text("模型名称")
        expect(page.locator("#model_name_or_path")).to_contain_text("模型路径")
        expect(page.get_by_role("button", name="开始训练")).to_be_visible()
        # the family table fills the template; the tiny model's folder goes in the path
        choose(page, "model_family", "ChatML")
        expect(page.locator("#template textarea")).to_have_value("chatml")
        fill(page, "model_name_or_path", model)
        fill(page, "dataset_dir", DEMO_DATA)
        fill(page, "dataset", "tunesmith_identity")
        page.get_by_role("button", name="预览数据集").click()
        expect(page.get_by_text("Who are you?").first).to_be_visible()
        for section in ("更多参数", "输出与分布式"):  # closed sections: open them to reach their fields
            page.get_by_text(section, exact=True).click()
        for key, value in {"max_steps": 4, "logging_steps": 1, "per_device_train_batch_size": 2,
                           "gradient_accumulation_steps": 1, "learning_rate": 0.001, "save_steps": 1000,
                           "output_dir": out}.items():
            fill(page, key, value)
        page.get_by_role("button", name="开始训练").click()
        # progress reaches 100% and the loss curve is drawn
        status = page.locator("#train_status")
        expect(status).to_contain_text("训练完成", timeout=120_000)
        expect(status).to_contain_text("4/4 (100%)")
        expect(page.locator("#progress input[type=number]")).to_have_value("100")
        expect(page.locator("#loss canvas, #loss svg").first).to_be_visible()
        assert (out / "adapter_model.safetensors").is_file()
        # evaluate the trained adapter on the bundled benchmark: the accuracy table appears
        fill(page, "adapter_name_or_path", out)
        page.get_by_role("tab", name="评估与预测").click()
        fill(page, "eval-n_shot", 0)
        page.get_by_role("button", name="开始评估").click()
        expect(page.locator("#eval_status")).to_contain_text("评估完成", timeout=120_000)
        expect(page.locator("#eval_results")).to_contain_text("Average")
        expect(page.locator("#eval_results")).to_contain_text("basic arithmetic")
        # chat with it
        page.get_by_role("tab", name="对话").click()
        page.get_by_role("button", name="加载模型", exact=True).click()
        expect(page.locator("#chat_state")).to_contain_text("模型已加载", timeout=60_000)
        fill(page, "chat_input", "Who are you?")
        page.get_by_role("button", name="发送").click()
        expect(page.locator("#chatbot [data-testid=user]").first).to_have_text("Who are you?", timeout=60_000)
        expect(page.locator("#chatbot [data-testid=bot]").first).to_have_text(re.compile(r"\S"), timeout=60_000)
        # and export it merged
        page.get_by_role("tab", name="导出").click()
        fill(page, "export_dir", tmp_path / "merged")
        page.get_by_role("button", name="开始导出").click()
        expect(page.locator("#export_log textarea")).to_have_value(re.compile("exported to"), timeout=120_000)
        assert (tmp_path / "merged" / "config.json").is_file()
