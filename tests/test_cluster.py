"""cluster/cluster.yaml against Ray's own cluster-launcher schema and checks (Ray 2.60).

`validate` does what ``ray up`` does to a config before it touches a cloud: fill in the
provider's defaults (``prepare_config``), then ``validate_config`` (the JSON schema in
``ray/autoscaler/ray-schema.json`` plus the node-type checks).
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from rlmpc.run.cliargs import build_dataclass
from rlmpc.tools import carla_servers
from rlmpc.tools.carla_servers import ServerConfig

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster" / "cluster.yaml"


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
    assert argv[:4] == ["python", "-m", "rlmpc.tools.carla_servers", "start"]
    servers = build_dataclass(ServerConfig, carla_servers._parser().parse_args(argv[3:]))
    ((name, node),) = carla_types(cfg).items()
    assert servers.count == node["resources"]["carla"]
    assert len(servers.gpus) <= servers.count
    mounts = [o.split()[1].split(":")[1] for o in node["docker"]["worker_run_options"] if o.startswith("-v ")]  # fmt: skip
    assert servers.carla_root in mounts, f"{name} nodes mount no CARLA at {servers.carla_root}"


def test_project_installed_on_every_node_torch_first() -> None:
    cfg = load()
    setup = cfg["setup_commands"]
    torch = next(i for i, c in enumerate(setup) if "torch==2.13.0" in c)
    project = next(
        i for i, c in enumerate(setup) if re.search(r"pip install .*-e .*\.\[carla\]", c)
    )
    assert torch < project
    (remote,) = [r for r, local in cfg["file_mounts"].items() if local == "."]
    assert f"cd {remote} " in setup[project]


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
