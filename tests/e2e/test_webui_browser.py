"""The web UI in headless Chromium: every label and help fits its box at desktop and phone widths and reads as words
(the key shown beside it); driven like a person in Chinese: train a tiny LoRA, evaluate, chat, export."""

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


# Every visible label and help text of the page: its width (and height) against its box. Inline label spans have no
# box of their own: they must stay inside their component's block.
OVERFLOWS = """() => {
  const texts = document.querySelectorAll('[data-testid="block-info"], .info-text, .label-text, .label-wrap span,'
                                          + ' .ts-data th, .ts-heading h3');
  const out = [];
  for (const el of texts) {
    const box = el.getBoundingClientRect();
    if (!box.width || !box.height || !el.textContent.trim()) continue;  // hidden (a closed tab or section)
    const style = getComputedStyle(el);
    if (style.display === 'inline') {
      const block = el.closest('.block') || el.parentElement;
      const outer = block.getBoundingClientRect();
      if (box.right > outer.right + 1 || box.left < outer.left - 1) out.push(el.textContent.trim());
    } else if (el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 1) {
      out.push(el.textContent.trim());
    }
  }
  return out;
}"""
# label text, and the key its ::after shows, of every visible field
LABELS = """() => [...document.querySelectorAll('.ts-field')].filter(b => b.getBoundingClientRect().height > 0).map(b => {
  const span = b.querySelector('[data-testid="block-info"], .label-text');
  return [b.id, span ? span.textContent.trim() : '', span ? getComputedStyle(span, '::after').content : ''];
})"""


@pytest.mark.parametrize("width", [1280, 390])
def test_labels_fit_and_are_words_at_desktop_and_phone_width(tmp_path, width):
    from playwright.sync_api import expect

    from tunesmith.webui import form
    from tunesmith.webui.browser import browser_page, serve

    with serve(tmp_path) as url, browser_page(width=width, height=900) as page:
        page.set_default_timeout(30_000)
        expect.set_options(timeout=30_000)
        page.goto(url)
        # the most used options are on the page before any section is opened
        for key in ("model_name_or_path", "finetuning_type", "dataset", "template", "learning_rate", "num_train_epochs",
                    "cutoff_len", "per_device_train_batch_size", "lora_rank", "lora_alpha", "lora_dropout",
                    "lora_target", "quantization_bit"):
            expect(page.locator(f"#{key}")).to_be_visible()
        expect(page.locator("#learning_rate")).to_contain_text("Learning rate")
        for section in form.SECTIONS:
            if section not in form.ALWAYS_SHOWN:
                page.locator(f"#sec-{section} button.label-wrap, #sec-{section} > button").first.click()
        expect(page.locator("#double_quantization")).to_be_visible()
        page.wait_for_timeout(500)
        assert page.evaluate(OVERFLOWS) == []
        labels = page.evaluate(LABELS)
        assert len(labels) == sum(len(keys) for keys in form.SECTIONS.values())
        for elem_id, text, shown_key in labels:
            assert text and text != elem_id and "_" not in text, (elem_id, text)  # words, not the key
            assert shown_key == f'"{elem_id}"', (elem_id, shown_key)  # the key, small, beside the label
        for tab in ("Evaluate & Predict", "Chat", "Export", "Runs"):  # every tab's name is on the page, even on a phone
            page.get_by_role("tab", name=tab).click()
            page.wait_for_timeout(300)
            assert page.evaluate(OVERFLOWS) == [], tab
        # a bad combination: the fields its error names are marked, the others are not
        page.get_by_role("tab", name="Train").click()
        choose(page, "finetuning_type", "full")
        choose(page, "quantization_bit", "4")
        page.get_by_role("button", name="Start", exact=True).click()
        expect(page.locator("#train_status")).to_contain_text("Failed")
        expect(page.locator("#quantization_bit")).to_have_class(re.compile("ts-bad"))
        expect(page.locator("#bad_fields")).to_contain_text("quantization_bit")
        expect(page.locator("#learning_rate")).not_to_have_class(re.compile("ts-bad"))


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
        preview = page.locator("#data_preview")
        expect(preview).to_contain_text("token lengths: p50")  # `tunesmith data check`, above the table
        expect(preview.locator("tr").filter(has_text="Who are you?").first).to_be_visible()
        expect(preview.locator("mark").first).to_be_visible()  # the trained tokens
        for section in ("更多训练参数", "日志、检查点与评估", "输出与分布式"):  # closed sections: open them
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
