"""Deploying: the console commands of an installed rlmpc, and a job submitted to a Ray cluster
that has no rlmpc installed (`ray job submit --working-dir .`), on a local `ray start` head."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


COMMANDS = ["rlmpc-train", "rlmpc-evaluate", "rlmpc-enjoy", "rlmpc-reproduce", "rlmpc-bench"]


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    """A new venv with the project installed from its wheel (not editable: what `pip install`
    from an index gives, package data included). The dependencies are the test venv's, reached
    through a path line (its own .pth files, the editable install among them, are not read):
    installing torch and Ray again would take minutes and gigabytes."""
    root = tmp_path_factory.mktemp("fresh")
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*build, "-w", str(root / "dist"), str(ROOT)], check=True, timeout=300)
    (wheel,) = (root / "dist").glob("rlmpc-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    deps = subprocess.run([sys.executable, "-c", "import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    Path(site, "test-deps.pth").write_text(deps + "\n")
    install = [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)]
    subprocess.run(install, check=True, timeout=300)
    return venv / "bin"


def test_the_fresh_venv_imports_the_installed_package_not_the_checkout(fresh_venv, tmp_path):
    code = "import rlmpc, envs; print(rlmpc.__file__); print(envs.spec('racing').presets)"
    out = subprocess.run([str(fresh_venv / "python"), "-c", code], capture_output=True,
                         text=True, cwd=tmp_path, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert str(fresh_venv.parent) in out.stdout.splitlines()[0]  # site-packages, not ROOT
    assert "total_env_steps" in out.stdout.splitlines()[1]  # presets.yaml (package data) came


@pytest.mark.parametrize("command", COMMANDS)
def test_the_console_commands_are_installed_and_answer(fresh_venv, command, tmp_path):
    """`pip install` puts them beside python; each answers from any directory, named as run."""
    out = subprocess.run([str(fresh_venv / command), "--help"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.lower().startswith(f"usage: {command}")


def test_the_train_command_runs_a_run_outside_the_checkout(fresh_venv, tmp_path):
    """`rlmpc-train` of a fresh install from another directory: the run lands there, ./runs."""
    out = subprocess.run(
        [str(fresh_venv / "rlmpc-train"), "--env", "acrobot", "--serial", "--total-env-steps", "2048",
         "--num-samples", "8", "--final-eval-episodes", "1", "--eval-every", "0",
         "--run-name", "here", "--no-progress", "--wandb-mode", "disabled"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "runs" / "here" / "eval.json").is_file()


def test_the_runtime_env_installs_what_pyproject_needs_but_torch_and_ray():
    """cluster/runtime_env.yaml's pip list is pyproject's dependencies without torch and ray
    (the cluster's own): one list kept in step with the other."""
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = sorted(d for d in deps if not d.startswith(("torch", "ray")))
    env = yaml.safe_load((ROOT / "cluster" / "runtime_env.yaml").read_text())
    assert sorted(env["pip"]) == wanted


@pytest.mark.timeout(900)
def test_a_job_submitted_with_its_working_dir_runs_on_a_cluster(tmp_path):
    """A two-iteration run as `ray job submit --working-dir . -- python launch.py ...` on a
    local head started with `ray start --block` in its own process group (killed with it)."""
    port, dash, agent, grpc, runtime_env, metrics, client = (_free_port() for _ in range(7))
    # the cluster's python (torch and ray installed) is the one on its nodes' PATH: here the
    # venv's, which scripts/test runs without activating it
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
    temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # Ray's socket paths must stay short
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}",
         f"--dashboard-port={dash}", "--num-cpus=3", "--include-dashboard=true",
         # every port of its own: the defaults (the agent's 52365...) may be taken by a Ray
         # another test runs beside this one, and an agent that cannot bind never comes up
         f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={grpc}",
         f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
         f"--ray-client-server-port={client}", f"--temp-dir={temp}", "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        address = f"http://127.0.0.1:{dash}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the job server answers once the head is up
            ok = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address],
                                capture_output=True, env=env, timeout=60)  # fmt: skip
            if ok.returncode == 0:
                break
            time.sleep(2)
        runtime = {
            "excludes": yaml.safe_load((ROOT / "cluster" / "runtime_env.yaml").read_text())[
                "excludes"
            ]
        }
        submit = lambda: subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".",
             "--runtime-env-json", json.dumps(runtime), "--",
             "python", "launch.py", "--env", "acrobot", "--ray-address", "auto",
             "--total-env-steps", "4096", "--num-samples", "8", "--final-eval-episodes", "1",
             "--eval-every", "0", "--runs-dir", str(tmp_path / "runs"), "--run-name", "job",
             "--no-progress", "--wandb-mode", "disabled"],
            capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
        )  # fmt: skip
        for _ in range(36):  # the node's agent takes its time to come up beside the head
            out = submit()
            if "No available agent" not in out.stdout + out.stderr:
                break
            time.sleep(5)
        if out.returncode != 0:  # pytest.fail prints the whole text (an assert's repr is cut)
            logs = sorted(Path(temp).glob("session_latest/logs/dashboard_agent*.log"))
            agent_log = logs[0].read_text()[-2000:] if logs else "no dashboard agent log"
            pytest.fail(f"stdout:\n{out.stdout[-4000:]}\nstderr:\n{out.stderr[-2000:]}\n"
                        f"dashboard agent:\n{agent_log}")  # fmt: skip
        rows = (tmp_path / "runs" / "job" / "metrics.jsonl").read_text().splitlines()
        assert len(rows) == 2 and (tmp_path / "runs" / "job" / "eval.json").is_file()
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(head.pid, sig)
            except ProcessLookupError:
                break
            time.sleep(3)
        head.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)
