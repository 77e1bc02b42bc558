"""Docker files: each Dockerfile agrees with its compose file (build args, ports, volumes), pip uses PIP_INDEX."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
VENDORS = ("cuda", "rocm", "npu", "cpu")
PORTS = {7860, 8000}
DEFAULT = re.compile(r"^\$\{(\w+):-(.*)\}$")  # compose's ${NAME:-default}


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, rest = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, f"{path} ends inside a continued line"
    return instructions


def dockerfile_facts(vendor: str) -> dict:
    instructions = parse_dockerfile(DOCKER / f"docker-{vendor}" / "Dockerfile")
    args, exposed, volumes = {}, set(), set()
    for keyword, rest in instructions:
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "EXPOSE":
            exposed |= {int(port.split("/")[0]) for port in rest.split()}
        elif keyword == "VOLUME":
            volumes |= set(json.loads(rest) if rest.startswith("[") else rest.split())
    return {"instructions": instructions, "args": args, "exposed": exposed, "volumes": volumes}


def compose_service(vendor: str) -> dict:
    data = yaml.safe_load((DOCKER / f"docker-{vendor}" / "docker-compose.yml").read_text(encoding="utf-8"))
    assert list(data["services"]) == ["tunesmith"]
    return data["services"]["tunesmith"]


def interpolate(value: str) -> str:
    """Compose's ${NAME:-default} with nothing set in the environment: the default."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))


def container_port(spec: str) -> int:
    return int(interpolate(spec).rsplit(":", 1)[-1].split("/")[0])


def pyproject_extras() -> dict[str, list[str]]:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]["optional-dependencies"]


@pytest.mark.parametrize("vendor", VENDORS)
def test_build_args_match_with_the_same_defaults(vendor):
    args = dockerfile_facts(vendor)["args"]
    build = compose_service(vendor)["build"]
    assert build["context"] == "../.."
    assert build["dockerfile"] == f"docker/docker-{vendor}/Dockerfile"
    assert set(build["args"]) == set(args)
    for name, value in build["args"].items():
        match = DEFAULT.match(str(value))
        assert match, f"{vendor}: build arg {name} should be ${{{name}:-default}}, got {value!r}"
        assert match.group(1) == name
        assert match.group(2) == args[name], f"{vendor}: {name} defaults differ between Dockerfile and compose"
    assert {"BASE_IMAGE", "PIP_INDEX", "EXTRAS"} <= set(args)


@pytest.mark.parametrize("vendor", VENDORS)
def test_ports_and_volumes_match(vendor):
    facts, service = dockerfile_facts(vendor), compose_service(vendor)
    assert facts["exposed"] == PORTS
    assert {container_port(spec) for spec in service["ports"]} == PORTS
    mounts = [interpolate(spec).split(":") for spec in service["volumes"]]
    workspace = {target for _, target, *_ in mounts if target.startswith("/workspace/")}
    assert (
        workspace
        == facts["volumes"]
        == {"/workspace/data", "/workspace/saves", "/workspace/outputs", "/workspace/hf_cache"}
    )
    for source, target, *mode in mounts:
        if target.startswith("/workspace/"):
            assert source.startswith("../../"), f"{vendor}: {target} should default to a folder in the repository"
        else:  # a host folder of the vendor's driver, seen at the same path, read-only
            assert (source, mode) == (target, ["ro"]), f"{vendor}: unexpected volume {source}:{target}"
    env = " ".join(rest for keyword, rest in facts["instructions"] if keyword == "ENV")
    assert "HF_HOME=/workspace/hf_cache" in env, "the model cache should live in the mounted folder"


@pytest.mark.parametrize("vendor", VENDORS)
def test_every_pip_call_uses_the_pip_index(vendor):
    instructions = dockerfile_facts(vendor)["instructions"]
    env = " ".join(rest for keyword, rest in instructions if keyword == "ENV")
    assert "PIP_INDEX_URL=${PIP_INDEX}" in env, "the mirror should stay the container's default index"
    calls = [
        part
        for keyword, rest in instructions
        if keyword == "RUN"
        for part in re.split(r"&&|;|\|\|?", rest)
        if re.search(r"\bpip3?\b", part)
    ]
    assert calls, f"{vendor}: no pip call found"
    for call in calls:
        assert re.search(r"(--index-url|--extra-index-url) \"?\$\{PIP_INDEX\}\"?", call), f"{vendor}: {call}"


@pytest.mark.parametrize("vendor", VENDORS)
def test_extras_exist_and_never_pull_torch(vendor):
    extras = pyproject_extras()
    default = dockerfile_facts(vendor)["args"]["EXTRAS"]
    for name in ["webui", *filter(None, default.split(","))]:
        assert name in extras, f"{vendor}: extra {name!r} is not in pyproject.toml"
    for name, requirements in extras.items():
        for requirement in requirements:
            assert not re.match(r"torch\b(?![-_])", requirement), f"extra {name} lists {requirement}"


@pytest.mark.parametrize("vendor", VENDORS)
def test_service_runs_the_web_ui(vendor):
    facts, service = dockerfile_facts(vendor), compose_service(vendor)
    assert service["command"] == "tunesmith webui --host 0.0.0.0"
    assert service["ipc"] == "host"
    keywords = dict(facts["instructions"])
    assert keywords["CMD"] == '["tunesmith", "webui", "--host", "0.0.0.0"]'
    assert "HEALTHCHECK" in keywords
    if vendor != "npu":  # Ascend's device files belong to the host's HwHiAiUser: the NPU image runs as root
        assert keywords.get("USER") not in (None, "root", "0")


def test_vendor_device_access():
    cuda = compose_service("cuda")["deploy"]["resources"]["reservations"]["devices"]
    assert cuda[0]["driver"] == "nvidia" and cuda[0]["capabilities"] == ["gpu"]

    rocm = compose_service("rocm")
    assert {spec.split(":")[0] for spec in rocm["devices"]} == {"/dev/kfd", "/dev/dri"}
    assert "video" in rocm["group_add"]

    npu = compose_service("npu")
    devices = set(npu["devices"])
    assert {"/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"} <= devices
    assert any(re.fullmatch(r"/dev/davinci\d+", device) for device in devices)
    assert "/usr/local/Ascend/driver:/usr/local/Ascend/driver:ro" in npu["volumes"]

    for vendor in ("cpu", "cuda"):
        assert "devices" not in compose_service(vendor)


def test_dockerignore_keeps_what_the_dockerfiles_copy():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = set()
    for vendor in VENDORS:
        for keyword, rest in dockerfile_facts(vendor)["instructions"]:
            if keyword == "COPY":
                copied |= set(rest.split()[:-1])
    assert copied == {"pyproject.toml", "README.md", "src", "examples"}
    for source in copied:
        assert (ROOT / source).exists()
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in patterns), source


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (Debian package) not installed")
@pytest.mark.parametrize("vendor", VENDORS)
def test_compose_file_validates(vendor):
    # A clean environment, so that values set in the shell (PIP_INDEX, EXTRAS, ...) do not change the check.
    env = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    compose = DOCKER / f"docker-{vendor}" / "docker-compose.yml"
    result = subprocess.run(
        ["docker-compose", "-f", str(compose), "config", "-q"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
