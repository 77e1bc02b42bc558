"""The web UI's door: login (--auth), no exposure without it, every path confined to the workspace root, and
trust_remote_code only when the server allows it. The real app over HTTP (gradio_client) and the real CLI."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import tunesmith
from tunesmith.webui import form

pytest.importorskip("gradio")

SRC = Path(tunesmith.__file__).resolve().parents[1]  # the CLI runs the tunesmith under test
KEYS = [key for keys in form.SECTIONS.values() for key in keys]
EVAL_KEYS = [key for keys in form.EVAL_SECTIONS.values() for key in keys]
SECRET = "top-secret-value-outside-the-root"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def form_values(**changes) -> list:
    """Every Train-tab input in page order: the form's defaults with some changed."""
    values = {key: form.fields()[key].default for key in KEYS}
    values.update(changes)
    return [None if isinstance(v, list) else v for v in (values[key] for key in KEYS)]


def eval_values(**changes) -> list:
    values = {key: form.EVAL_DEFAULTS.get(key, form.fields()[key].default) for key in EVAL_KEYS}
    values.update(changes)
    return [values[key] for key in EVAL_KEYS]


def tree(folder: Path) -> set:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def cli_env() -> dict:
    env = {key: value for key, value in os.environ.items() if key != "TUNESMITH_WEBUI_AUTH"}
    return {**env, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """root (the app's workspace) and outside (a sibling holding a secret config, a dataset and a model folder);
    root/link is a symlink to outside."""
    base = tmp_path_factory.mktemp("webui-safety")
    root, outside = base / "root", base / "outside"
    root.mkdir()
    (outside / "model").mkdir(parents=True)
    (outside / "secret.yaml").write_text(f"model_name_or_path: {SECRET}\n")
    (outside / "records.json").write_text(json.dumps([{"instruction": SECRET, "output": "x"}]))
    (outside / "dataset_info.json").write_text(json.dumps({"stolen": {"file_name": "records.json"}}))
    (outside / "model" / "config.json").write_text("{}")
    (root / "link").symlink_to(outside, target_is_directory=True)
    # a registry inside the root whose file points outside, and a registry that is itself a link outside
    (root / "escaping").mkdir()
    (root / "escaping" / "dataset_info.json").write_text(
        json.dumps({"escape": {"file_name": "../../outside/records.json"}}))
    (root / "linked_registry").mkdir()
    (root / "linked_registry" / "dataset_info.json").symlink_to(outside / "dataset_info.json")
    (root / "evil").mkdir()
    (root / "evil" / "model").symlink_to(outside / "model", target_is_directory=True)  # looks like a hub id
    return root, outside


@pytest.fixture(scope="module")
def client(places):
    """The real app, workspace root `root` (also the current folder, as `tunesmith webui` is started), no login,
    started without --trust-remote-code."""
    from gradio_client import Client

    from tunesmith.webui.app import build_app

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(places[0])
        app = build_app(places[0])
        port = free_port()
        app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        try:
            yield Client(f"http://127.0.0.1:{port}/", verbose=False)
        finally:
            app.close()


@pytest.mark.parametrize("flags", [["--host", "0.0.0.0"], ["--share"], ["--host", "192.168.1.5", "--share"]])
def test_exposure_without_auth_exits_with_the_reason(flags, tmp_path):
    done = subprocess.run([sys.executable, "-m", "tunesmith", "webui", "--port", str(free_port()), *flags],
                          check=False, cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0
    assert "--auth user:password" in done.stderr and "Traceback" not in done.stderr
    assert ("--share opens a public link" if "--share" in flags else "listens beyond this machine") in done.stderr
    assert "Running on" not in done.stdout


def test_malformed_credentials_are_named(tmp_path):
    (tmp_path / "users").write_text("# who may log in\nalice:wonderland\nbob\n")
    done = subprocess.run([sys.executable, "-m", "tunesmith", "webui", "--auth-file", "users", "--share"],
                          check=False, cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and "users line 3" in done.stderr and "user:password" in done.stderr


def test_login_is_required_and_the_right_credentials_work(tmp_path):
    """`tunesmith webui` on 0.0.0.0 with users from --auth-file and $TUNESMITH_WEBUI_AUTH."""
    from gradio_client import Client

    (tmp_path / "users").write_text("alice:wonderland\n")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**cli_env(), "TUNESMITH_WEBUI_AUTH": "bob:builder"}
    server = subprocess.Popen([sys.executable, "-m", "tunesmith", "webui", "--host", "0.0.0.0", "--port", str(port),
                               "--auth-file", "users"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180  # a safety net: importing gradio on a loaded box
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                urllib.request.urlopen(base + "/config", timeout=5)
                raise AssertionError("/config answered without a login")
            except urllib.error.HTTPError as exc:
                assert exc.code == 401
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.5)
        data = json.dumps({"data": ["made-without-login.yaml", *form_values()]}).encode()
        for path, body in (("/gradio_api/call/save", data), ("/gradio_api/info", None),
                           (f"/gradio_api/file={tmp_path / 'users'}", None)):
            request = urllib.request.Request(base + path, data=body, headers={"Content-Type": "application/json"})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=30)
            assert refused.value.code == 401, path
        with pytest.raises(ValueError, match="Could not login"):
            Client(base + "/", auth=("alice", "wrong"), verbose=False)
        for user, password in (("alice", "wonderland"), ("bob", "builder")):
            client = Client(base + "/", auth=(user, password), verbose=False)
            text = client.predict(f"{user}.yaml", *form_values(), api_name="/save")
            assert text.startswith(f"# saved {tmp_path / f'{user}.yaml'}")
        assert not (tmp_path / "made-without-login.yaml").exists()
        assert (tmp_path / "alice.yaml").is_file() and (tmp_path / "bob.yaml").is_file()
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.mark.parametrize("where", ["../outside/saved.yaml", "ABS", "link/saved.yaml", "link/../../outside/saved.yaml"])
def test_save_outside_the_root_is_refused(client, places, where):
    outside = places[1]
    before = tree(outside)
    path = str(outside / "saved.yaml") if where == "ABS" else where
    text = client.predict(path, *form_values(), api_name="/save")
    assert text.startswith("# error:") and "outside it" in text and "nothing saved" in text
    assert tree(outside) == before


def test_save_refuses_non_yaml_names_and_outside_paths_in_the_config(client, places):
    root, outside = places
    text = client.predict("tunesmith.py", *form_values(), api_name="/save")  # would shadow the package in -m runs
    assert "not a .yaml or .yml file" in text and not (root / "tunesmith.py").exists()
    text = client.predict("webui_runs/ok.yaml", *form_values(output_dir=str(outside / "run")), api_name="/save")
    assert "`output_dir`" in text and "outside it" in text and not (root / "webui_runs" / "ok.yaml").exists()
    text = client.predict("webui_runs/ok.yaml", *form_values(output_dir="."), api_name="/save")
    assert "is the root itself" in text  # a run never writes into (or overwrites) the root folder itself
    text = client.predict("webui_runs/ok.yaml", *form_values(output_dir="saves/run"), api_name="/save")
    assert text.startswith(f"# saved {root / 'webui_runs' / 'ok.yaml'}")


@pytest.mark.parametrize("where", ["../outside/secret.yaml", "ABS", "link/secret.yaml"])
def test_load_outside_the_root_is_refused(client, places, where):
    from gradio_client.exceptions import AppError

    path = str(places[1] / "secret.yaml") if where == "ABS" else where
    with pytest.raises(AppError, match="outside it") as refused:
        client.predict(path, api_name="/load")
    assert SECRET not in str(refused.value)


def test_gradio_does_not_serve_files_outside(client, places):
    for path in (places[1] / "secret.yaml", places[0] / "link" / "secret.yaml"):
        try:
            body = urllib.request.urlopen(f"{client.src}gradio_api/file={path}", timeout=30).read().decode()
        except urllib.error.HTTPError as exc:
            assert exc.code in (403, 404)
        else:
            assert SECRET not in body


@pytest.mark.parametrize("changes", [{"dataset_dir": "link"}, {"dataset_dir": "../outside"},
                                     {"dataset_dir": "linked_registry", "dataset": "stolen"},
                                     {"dataset_dir": "escaping", "dataset": "escape"},
                                     {"dataset": "../outside/records.json"}, {"dataset": "link/records.json"}])
def test_dataset_preview_reads_nothing_outside(client, places, changes):
    text = client.predict(*form_values(**changes), api_name="/preview_data")
    assert 'class="ts-error">error:' in text and "outside it" in text
    assert SECRET not in text


def test_start_with_paths_outside_is_refused_and_writes_nothing(client, places):
    root, outside = places
    before, runs = tree(outside), tree(root)
    run = "webui_runs/a.yaml"
    for path, key, changes in [(run, "output_dir", {"output_dir": "../outside/run"}),
                               (run, "output_dir", {"output_dir": "link/run"}),
                               (run, "model_name_or_path", {"model_name_or_path": str(outside / "model")}),
                               (run, "model_name_or_path", {"model_name_or_path": "link/model"}),
                               (run, "model_name_or_path", {"model_name_or_path": "evil/model"}),  # org/name: a link
                               (run, "adapter_name_or_path", {"adapter_name_or_path": "saves/a,../outside/model"}),
                               (run, "tokenized_path", {"tokenized_path": str(outside / "tokenized")}),
                               (run, "cache_dir", {"cache_dir": "../outside/cache"}),
                               (run, "resume_from_checkpoint", {"resume_from_checkpoint": "link/model"}),
                               (run, "ref_model", {"ref_model": "../outside/model"}),
                               (run, "reward_model", {"stage": "ppo", "reward_model": "link/model"}),
                               (run, "ray_storage_path", {"ray_storage_path": "../outside/ray"}),
                               (run, "dataset", {"dataset": "link/records.json"}),
                               ("../outside/a.yaml", "config path", {}), ("link/a.yaml", "config path", {})]:
        ordered = form_values(**{"model_name_or_path": "Qwen/Qwen2.5-0.5B", **changes})
        status, _ = client.predict(path, *ordered, api_name="/start")
        assert "Failed" in status and "outside it" in status and f"`{key}`" in status, (changes, status)
    assert tree(outside) == before and tree(root) == runs  # no YAML, log or run folder anywhere


def test_eval_and_export_paths_outside_are_refused(client, places):
    root, outside = places
    before, runs = tree(outside), tree(root)
    train = form_values(model_name_or_path="Qwen/Qwen2.5-0.5B")
    for mode, changes in (("benchmark", {"save_dir": "../outside/results"}), ("benchmark", {"task_dir": "link"}),
                          ("benchmark", {"task": "../../../outside/x_test"}),
                          ("predict", {"eval_dataset": "link/records.json"})):
        status, _, _ = client.predict("webui_runs/t.yaml", mode, *train, *eval_values(n_shot=0, **changes),
                                      api_name="/eval_start")
        assert "Failed" in status and "outside it" in status and f"`{next(iter(changes))}`" in status, status
    text = client.predict("webui_runs/t.yaml", "predict", *train, *eval_values(save_dir=str(outside / "p")),
                          api_name="/eval_preview")
    assert text.startswith("# error:") and "`save_dir`" in text
    log = client.predict("webui_runs/t.yaml", *train, str(outside / "merged"), 1, "float32", api_name="/export")
    assert "`export_dir`" in log and "outside it" in log
    log = client.predict("link/t.yaml", *train, "merged", 1, "float32", api_name="/export")
    assert "config path" in log and "outside it" in log
    assert tree(outside) == before and tree(root) == runs


def test_hub_ids_are_model_names_not_paths(client, places):
    text = client.predict("webui_runs/h.yaml", *form_values(model_name_or_path="Qwen/Qwen2.5-0.5B",
                                                            template="qwen"), api_name="/preview")
    assert "outside" not in text and "model_name_or_path: Qwen/Qwen2.5-0.5B" in text
    from tunesmith.webui.workspace import Workspace, WorkspaceError

    workspace = Workspace(places[0])
    assert workspace.model("Qwen/Qwen2.5-0.5B", "model_name_or_path") == "Qwen/Qwen2.5-0.5B"
    assert workspace.model("saves/lora/m", "adapter_name_or_path") == str(places[0] / "saves" / "lora" / "m")
    assert workspace.model("models/m", "model_name_or_path") == "models/m"  # no such folder: a hub id
    (places[0] / "models" / "m").mkdir(parents=True)
    assert workspace.model("models/m", "model_name_or_path") == str(places[0] / "models" / "m")  # now a folder
    for not_hub in ("../outside", "evil/model", "/etc/x", "org/../../x", "../a/b", "~/models/m"):
        with pytest.raises(WorkspaceError, match="outside it"):
            workspace.model(not_hub, "model_name_or_path")
    (places[0] / "loop").symlink_to(places[0] / "loop")
    for broken in ("loop/x", "bad\0name"):
        with pytest.raises(WorkspaceError, match="not a usable path"):
            workspace.path(broken, "output_dir", write=True)


def test_trust_remote_code_from_the_page_is_refused_unless_the_server_allows_it(client, places):
    root = places[0]
    ordered = form_values(model_name_or_path="Qwen/Qwen2.5-0.5B", dataset="x", trust_remote_code=True)
    status, _ = client.predict("webui_runs/trc.yaml", *ordered, api_name="/start")
    assert "Failed" in status and "`trust_remote_code` is refused" in status and "--trust-remote-code" in status
    assert not (root / "webui_runs" / "trc.yaml").exists()
    assert "`trust_remote_code` is refused" in client.predict(*ordered, api_name="/chat_load")
    assert "`trust_remote_code` is refused" in client.predict("webui_runs/trc.yaml", *ordered, api_name="/preview")
    from tunesmith.webui.workspace import Workspace

    allowed = Workspace(root, trust_remote_code=True).confine({"trust_remote_code": True})
    assert allowed["trust_remote_code"] is True


@pytest.mark.parametrize("changes", [{"nnodes": 2}, {"node_rank": 1}, {"master_addr": "203.0.113.7"},
                                     {"ray_num_workers": 1, "ray_address": "ray://203.0.113.7:10001"}])
def test_runs_that_join_other_machines_are_refused(client, places, changes):
    runs = tree(places[0])
    ordered = form_values(model_name_or_path="Qwen/Qwen2.5-0.5B", **changes)
    status, _ = client.predict("webui_runs/remote.yaml", *ordered, api_name="/start")
    assert "Failed" in status and "only runs jobs on this machine" in status and "tunesmith train" in status
    assert tree(places[0]) == runs
