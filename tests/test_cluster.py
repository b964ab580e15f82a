"""cluster/cluster.yaml against Ray's own cluster-launcher schema and checks (Ray 2.60).

`validate` does what ``ray up`` does to a config before it touches a cloud: fill in the
provider's defaults (``prepare_config``), then ``validate_config`` (the JSON schema in
``ray/autoscaler/ray-schema.json`` plus the node-type checks).
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import os
import re
import shlex
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private import util as ray_util
from ray.autoscaler._private.util import prepare_config, validate_config

from envs.racing.carla_env import CarlaRacingEnv
from rlmpc.ops import carla_servers
from rlmpc.ops.carla_servers import ServerConfig
from rlmpc.run.cliargs import build_dataclass

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster" / "cluster.yaml"
REMOTE = "~/rlmpc"  # where the sources go on every node


def load(text: str | None = None) -> dict:
    return yaml.safe_load(CLUSTER.read_text() if text is None else text)


def validate(cfg: dict) -> dict:
    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


def carla_types(cfg: dict) -> dict[str, dict]:
    return {k: t for k, t in cfg["available_node_types"].items() if t["resources"].get("carla")}


def test_cluster_yaml_passes_rays_validator() -> None:
    cfg = validate(load())
    types = cfg["available_node_types"]
    assert cfg["provider"]["type"] == "aws"
    assert "carla" not in types[cfg["head_node_type"]]["resources"]  # the learner's node
    (carla,) = carla_types(cfg).values()
    assert 1 <= carla["min_workers"] <= carla["max_workers"] <= cfg["max_workers"]


BROKEN = {
    "typo in a top-level key": lambda c: c.__setitem__("setup_comands", c.pop("setup_commands")),
    "typo in a node-type key": lambda c: c["available_node_types"]["carla"].__setitem__(
        "resorces", c["available_node_types"]["carla"].pop("resources")
    ),
    "fractional resource": lambda c: c["available_node_types"]["carla"]["resources"].update(
        carla=2.5
    ),  # fmt: skip
    "unknown docker option": lambda c: c["docker"].update(imagee="rayproject/ray"),
    "head type not defined": lambda c: c.update(head_node_type="learner"),
    "min_workers above max_workers": lambda c: c.update(max_workers=1),
}


@pytest.mark.parametrize("broken", BROKEN)
def test_a_broken_copy_fails_validation(broken: str) -> None:
    cfg = load()
    BROKEN[broken](cfg)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validate(cfg)


def test_a_typo_in_the_file_fails_validation(tmp_path: Path) -> None:
    text = CLUSTER.read_text()
    assert "\nworker_start_ray_commands:" in text
    broken = tmp_path / "cluster.yaml"
    broken.write_text(text.replace("\nworker_start_ray_commands:", "\nworker_start_ray_comands:"))
    with pytest.raises(jsonschema.ValidationError, match="worker_start_ray_comands"):
        validate(load(broken.read_text()))


def test_carla_nodes_start_as_many_servers_as_they_offer() -> None:
    cfg = load()
    cmds = cfg["worker_start_ray_commands"]
    at = {key: next(i for i, c in enumerate(cmds) if key in c)
          for key in ("carla_servers stop", "carla_servers start", "ray start")}  # fmt: skip
    assert at["carla_servers stop"] < at["carla_servers start"] < at["ray start"]
    argv = shlex.split(cmds[at["carla_servers start"]])
    assert argv[:4] == ["python", "-m", "rlmpc.ops.carla_servers", "start"]
    servers = build_dataclass(ServerConfig, carla_servers._parser().parse_args(argv[3:]))
    ((name, node),) = carla_types(cfg).items()
    assert servers.count == node["resources"]["carla"]
    assert len(servers.gpus) <= servers.count
    mounts = [o.split()[1].split(":")[1] for o in node["docker"]["worker_run_options"] if o.startswith("-v ")]  # fmt: skip
    assert servers.carla_root in mounts, f"{name} nodes mount no CARLA at {servers.carla_root}"
    assert "--watch" in argv  # the node's watchdog keeps the servers up


def test_carla_nodes_need_no_gpu_and_the_head_gets_one() -> None:
    cfg = load()
    cmds = cfg["worker_start_ray_commands"]
    argv = shlex.split(next(c for c in cmds if "carla_servers start" in c))
    servers = build_dataclass(ServerConfig, carla_servers._parser().parse_args(argv[3:]))
    assert servers.render == "none" and servers.gpus == ()  # -nullrhi
    assert "--gpus all" not in cfg["docker"]["run_options"]
    assert "--gpus all" in cfg["docker"]["head_run_options"]
    ((_, node),) = carla_types(cfg).items()
    assert not re.match(r"(g|p)\d", node["node_config"]["InstanceType"])  # no GPU instance


def test_carla_nodes_install_the_town_the_env_drives() -> None:
    """CARLA's image ships Town01-05 and Town10HD; the env's town comes in AdditionalMaps."""
    cfg = load()
    ((_, node),) = carla_types(cfg).items()
    init = "\n".join(node["initialization_commands"])
    town = inspect.signature(CarlaRacingEnv).parameters["town"].default
    assert town == "Town07"
    assert "AdditionalMaps_0.9.16.tar.gz" in init and "ImportAssets.sh" in init
    assert f"Maps/OpenDrive/{town}.xodr" in init  # checked after the import, and to skip it


def build_wheel(out: Path) -> Path:
    """The wheel the cluster's nodes install, built as cluster.yaml's header says (offline)."""
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*cmd, "-w", str(out), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("rlmpc-*.whl")
    return wheel


def test_the_nodes_get_one_directory_the_projects_wheel(tmp_path) -> None:
    """file_mounts is ./dist alone (no single files, nothing else of the checkout) and the setup
    installs the wheel there with the carla extra; the wheel holds every package the project
    finds and the task presets, so a node needs nothing else of the checkout."""
    cfg = load()
    assert cfg["file_mounts"] == {f"{REMOTE}/dist": "./dist"}
    setup = cfg["setup_commands"]
    torch = next(i for i, c in enumerate(setup) if "pip install -q torch==2.13.0" in c)
    project = next(i for i, c in enumerate(setup) if f"{REMOTE}/dist/rlmpc-*.whl)[carla]" in c)
    assert torch < project and "--force-reinstall --no-deps" in setup[project + 1]
    assert "pip wheel --no-deps -w dist ." in CLUSTER.read_text()
    names = zipfile.ZipFile(build_wheel(tmp_path)).namelist()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for package in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert any(n.startswith(package.rstrip("*") + "/") for n in names), package
    presets = {p.relative_to(ROOT).as_posix() for p in ROOT.glob("envs/*/*.yaml")}
    assert presets and presets <= set(names)
    assert not any("__pycache__" in n or n.startswith("tests/") for n in names)


def test_rays_config_preparation_warns_of_no_file_mount(tmp_path, capfd) -> None:
    """`ray up` runs prepare_config, whose docker check warns for each mounted file ("refers to
    a file ... please use a directory"); cluster.yaml's mounts draw none. The same check on a
    file mount does warn: the capture sees Ray's warning when there is one."""
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "rlmpc-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    (tmp_path / "pyproject.toml").write_text("[project]")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        capfd.readouterr()
        validate(load())
        ours = "".join(capfd.readouterr())
        validate({**load(), "file_mounts": {f"{REMOTE}/pyproject.toml": "./pyproject.toml"}})
        single = "".join(capfd.readouterr())
    finally:
        os.chdir(cwd)
    assert "refers to a file" in single
    assert "refers to a file" not in ours and "File Mount" not in ours


def test_local_changes_leave_rays_hash_alone_and_a_new_wheel_changes_it(tmp_path) -> None:
    """Ray hashes every file under each file_mounts path on `ray up` (rsync filters do not
    apply); a change re-runs setup and restarts the CARLA nodes. With ./dist the only mount,
    runs/, wandb/, .venv/, the sources and their __pycache__ do not count; a rebuilt wheel does."""
    cfg = load()
    wheel = tmp_path / "dist" / "rlmpc-0.1.0-py3-none-any.whl"
    junk = [".venv/lib/x.py", "runs/r/metrics.jsonl", "wandb/latest-run/x", "envs/racing/task.py",
            "rlmpc/__pycache__/cli.cpython-311.pyc"]  # fmt: skip
    for path in [wheel, *(tmp_path / j for j in junk)]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("0")

    def ray_hash() -> tuple[str, str]:
        ray_util._hash_cache.clear()
        cwd = os.getcwd()
        os.chdir(tmp_path)
        try:
            return ray_util.hash_runtime_conf(cfg["file_mounts"], None, cfg)
        finally:
            os.chdir(cwd)

    before = ray_hash()
    for j in junk:
        (tmp_path / j).write_text("changed")
    assert ray_hash() == before
    wheel.write_text("rebuilt")
    assert ray_hash() != before  # a new wheel reaches the nodes


def test_pin_amis_resolves_the_ssm_parameters_and_nothing_else() -> None:
    spec = importlib.util.spec_from_file_location("pin_amis", ROOT / "cluster" / "pin_amis.py")
    pin_amis = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pin_amis)
    text = CLUSTER.read_text()
    asked = []

    def resolve(region: str, name: str) -> str:
        asked.append((region, name))
        return "ami-0123456789abcdef0"

    pinned = pin_amis.pin(text, resolve)
    assert "resolve:ssm:" in text and "resolve:ssm:" not in pinned
    assert {r for r, _ in asked} == {"us-west-2"} and len(asked) == len({n for _, n in asked})
    cfg = validate(load(pinned))
    assert {t["node_config"]["ImageId"] for t in cfg["available_node_types"].values()} == {
        "ami-0123456789abcdef0"
    }
    # the rest of the file, comments included, unchanged
    assert re.sub(r"ami-0123456789abcdef0", "X", pinned) == re.sub(r"resolve:ssm:\S+", "X", text)
    with pytest.raises(ValueError, match="not an AMI id"):
        pin_amis.pin(text, lambda region, name: "ParameterNotFound")


def test_no_credentials_in_the_file() -> None:
    cfg = load()
    assert set(cfg["auth"]) == {"ssh_user"}  # Ray makes its own key pair
    settings = "\n".join(line for line in CLUSTER.read_text().splitlines() if not line.lstrip().startswith("#"))  # fmt: skip
    assert not re.search(r"AKIA[0-9A-Z]{16}|aws_secret_access_key|aws_access_key_id|ssh_private_key", settings, re.I)  # fmt: skip


@pytest.mark.slow
def test_rehearsal_on_this_machine() -> None:
    """cluster/rehearse.sh: head + 2 CARLA nodes, stand-in servers, claims, a short run (~1 min)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(["bash", str(ROOT / "cluster" / "rehearse.sh")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "ok: 4 actors, 4 distinct servers on 2 nodes" in out.stdout
    assert "rehearsal passed" in out.stdout
