"""README command #1: `tunesmith demo` learns its answers, and the next commands it prints work on the run folder."""

import subprocess
import sys

import pytest

from tunesmith.demo import PROMPTS, expected_answers


@pytest.mark.slow
def test_demo_learns_and_its_chat_command_gives_the_trained_answer(tmp_path):
    demo = subprocess.run([sys.executable, "-m", "tunesmith", "demo", "--out", "outputs/demo"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900, check=False)
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert f"{len(PROMPTS)}/{len(PROMPTS)} prompts now get their trained answer" in demo.stdout
    assert "tunesmith chat outputs/demo " in demo.stdout and "tunesmith data preview outputs/demo -n 2" in demo.stdout
    chat = subprocess.run([sys.executable, "-m", "tunesmith", "chat", "outputs/demo"], cwd=tmp_path,
                          input="Who are you?\nexit\n", capture_output=True, text=True, timeout=300, check=False)
    assert chat.returncode == 0, chat.stderr[-2000:]
    assert f"Assistant: {expected_answers()['Who are you?']}\n" in chat.stdout
    preview = subprocess.run([sys.executable, "-m", "tunesmith", "data", "preview", "outputs/demo", "-n", "2"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert preview.returncode == 0 and "--- example 0" in preview.stdout
