"""The Runs tab in headless Chromium: two finished runs listed with their losses, their curves overlaid, an
interrupted run resumed to completion with one click, a finished one loaded into the Chat tab with another."""

import shutil
from pathlib import Path

import pytest

import tunesmith
from tunesmith import runs
from tunesmith.cli import main
from tunesmith.webui.browser import choose, chromium_path

DEMO_DATA = Path(tunesmith.__file__).resolve().parent / "demo_data"
RUN_ARGS = ["dataset=tunesmith_identity", f"dataset_dir={DEMO_DATA}", "template=chatml", "cutoff_len=64",
            "max_steps=4", "per_device_train_batch_size=2", "logging_steps=1", "save_strategy=steps", "save_steps=2",
            "report_to=none", "seed=7"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium_path() is None, reason="needs Debian's Chromium at /usr/bin/chromium: "
                       "apt-get install -y chromium (bash scripts/test.sh installs it when run as root)"),
]


def train(root: Path, name: str, *overrides: str) -> Path:
    out = root / "saves" / name
    (root / "c.yaml").write_text("stage: sft\n")
    assert main(["train", str(root / "c.yaml"), f"model_name_or_path={root / 'model'}", f"output_dir={out}",
                 *RUN_ARGS, *overrides]) == 0
    return out


def test_runs_view_in_the_browser(tmp_path, tiny_model_dir):
    from playwright.sync_api import expect

    from tunesmith.webui.browser import browser_page, serve

    shutil.copytree(tiny_model_dir, tmp_path / "model")
    a = train(tmp_path, "a", "learning_rate=1e-3")
    train(tmp_path, "b", "learning_rate=5e-3")
    c = train(tmp_path, "c", "learning_rate=1e-3")
    for name in ("all_results.json", "trainer_state.json", "adapter_model.safetensors", "adapter_config.json"):
        (c / name).unlink()  # killed during its final save
    shutil.rmtree(c / "checkpoint-4")
    with serve(tmp_path) as url, browser_page() as page:
        page.set_default_timeout(30_000)
        expect.set_options(timeout=30_000)
        page.goto(url)
        page.get_by_role("tab", name="Runs").click()
        table = page.locator("#runs_table")
        for name in ("a", "b"):
            run = runs.read_run(tmp_path / "saves" / name)
            row = table.get_by_role("row").filter(has_text=f"saves/{name}")
            expect(row).to_contain_text("finished")
            expect(row).to_contain_text(f"{run.last_loss:.4f}")
            expect(row).to_contain_text(f"{run.best_loss:.4f}")
        expect(table.get_by_role("row").filter(has_text="saves/c")).to_contain_text("interrupted")
        table.get_by_role("gridcell", name="saves/a", exact=True).click()  # a click on a row selects it
        choose(page, "runs_selected", "saves/b")
        page.keyboard.press("Escape")
        curves = page.locator("#runs_curves")
        expect(curves.get_by_text("saves/a")).to_be_visible()  # the legend: one entry a run
        expect(curves.get_by_text("saves/b")).to_be_visible()
        expect(page.locator("#runs_summary")).to_contain_text("saves/b")
        expect(page.locator("#runs_results")).to_contain_text("train_loss")
        # resume the interrupted run: it trains from checkpoint-2 to the end
        table.get_by_role("gridcell", name="saves/c", exact=True).click()
        expect(page.locator("#runs_summary")).to_contain_text("resumes from checkpoint-2")
        page.get_by_role("button", name="Resume").click()
        expect(page.locator("#runs_action")).to_contain_text("Finished", timeout=240_000)
        expect(table.get_by_role("row").filter(has_text="saves/c")).to_contain_text("finished")
        assert runs.losses(c) == runs.losses(a)  # resumed == uninterrupted (same seed and settings)
        # chat with it, now finished, in one click: its adapter goes into the Train tab and the Chat tab loads it
        page.get_by_role("button", name="Chat with it").click()
        page.get_by_role("tab", name="Chat").click()
        expect(page.locator("#chat_state")).to_contain_text("Model loaded: c", timeout=120_000)
        page.get_by_role("tab", name="Train").click()
        expect(page.locator("#adapter_name_or_path textarea")).to_have_value(str(c))
