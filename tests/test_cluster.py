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
import posixpath
import re
import shlex
import shutil
import subprocess
import tomllib
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


def mounted(cfg: dict) -> dict[str, str]:
    return {remote: local for remote, local in cfg["file_mounts"].items()}


def test_file_mounts_hold_the_sources_only_so_local_runs_do_not_change_rays_hash(tmp_path) -> None:
    """Ray hashes every file under each file_mounts path on `ray up` (rsync filters do not
    apply); a change there re-runs setup and restarts the CARLA nodes. The mounts are the
    sources: Ray's own hash of them ignores .venv, runs and wandb, and follows the sources."""
    cfg = load()
    mounts = mounted(cfg)
    assert "." not in mounts.values() and all(r.startswith(REMOTE + "/") for r in mounts)
    for remote, local in mounts.items():
        assert posixpath.normpath(local) == posixpath.normpath(remote.removeprefix(REMOTE + "/"))
        top = Path(local).parts[0] if Path(local).parts[0] != "." else Path(local).parts[1]
        assert top not in (".venv", "runs", "wandb", ".git")
        assert (ROOT / local).exists(), local
    # everything `pip install -e .` needs: pyproject, its readme, every package it finds
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", project["project"]["readme"], "launch.py"}
    needed |= {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert needed <= {Path(local).as_posix().removeprefix("./") for local in mounts.values()}
    # Ray's hash, on a copy of the tree: runs/, wandb/, .venv/ beside the sources do not count
    for local in mounts.values():
        src, dst = ROOT / local, tmp_path / local
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    for junk in (".venv/lib/x.py", "runs/r/metrics.jsonl", "wandb/latest-run/x"):
        (tmp_path / junk).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / junk).write_text("0")

    def ray_hash() -> tuple[str, str]:
        ray_util._hash_cache.clear()
        cwd = os.getcwd()
        os.chdir(tmp_path)
        try:
            return ray_util.hash_runtime_conf(cfg["file_mounts"], None, cfg)
        finally:
            os.chdir(cwd)

    before = ray_hash()
    for junk in (".venv/lib/x.py", "runs/r/metrics.jsonl", "wandb/latest-run/x"):
        (tmp_path / junk).write_text("changed")
    assert ray_hash() == before
    (tmp_path / "envs" / "racing" / "task.py").write_text("# changed")
    assert ray_hash() != before  # a source change still reaches the nodes


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


def test_project_installed_on_every_node_torch_first() -> None:
    cfg = load()
    setup = cfg["setup_commands"]
    torch = next(i for i, c in enumerate(setup) if "torch==2.13.0" in c)
    project = next(
        i for i, c in enumerate(setup) if re.search(r"pip install .*-e .*\.\[carla\]", c)
    )
    assert torch < project
    assert f"cd {REMOTE} " in setup[project]


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
