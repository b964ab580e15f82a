"""Numerical fingerprint of the training system, to show a change moved no number.

``python scripts/fingerprint.py --out before.json`` (at one commit), then
``python scripts/fingerprint.py --compare before.json`` (at another, on the same machine):

* **collect**: one rollout worker per env (16 envs, M = 4, the env's Table-5 planner,
  seed 0, the bound's diagnostics on where the code has them) collects 300 steps; the
  SHA-256 of each array of its real and virtual fragment;
* **runs**: ``launch.py --serial`` for 20 iterations (40,960 env steps, seed 0, no
  evaluation); the SHA-256 of ``metrics.jsonl`` without its clock keys (``sps``, ``time``,
  ``time/*``), and the rows themselves.

Seeded runs are deterministic on one machine but not across CPUs (a reduction's float order
differs between AVX-512 and AVX2), so compare fingerprints made on the same machine. It uses
only what the project has had since the re-cut's pre-move commit f5e2454 (the registry's
planner preset, `rlmpc.system.worker`, ``launch.py``'s options), so the reference is made by
*this* script (HEAD's; an earlier commit's copy writes an older format) run in a tree of the
earlier commit, then compared in HEAD's tree:

    mkdir -p /tmp/pre && git archive f5e2454 | tar -x -C /tmp/pre
    cp scripts/fingerprint.py /tmp/pre/scripts/
    (cd /tmp/pre && python scripts/fingerprint.py --out /tmp/before.json)
    python scripts/fingerprint.py --compare /tmp/before.json    # exit 1 if a number moved

``--ignore-new`` compares on the earlier fingerprint's metric keys (those of its first row)
and collect arrays alone, so keys and arrays added after that commit are skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENVS = ("acrobot", "lunarlander")
CLOCK = ("sps", "time")


def collect_hashes(env: str, steps: int = 300) -> dict[str, str]:
    sys.path.insert(0, str(ROOT))
    import torch

    import envs
    from learners.policy import NetworkConfig
    from rlmpc.system.records import FragmentId
    from rlmpc.system.worker import RolloutWorker, WorkerSpec

    torch.set_num_threads(1)
    extra = {"diagnostics": True} if "diagnostics" in WorkerSpec.__dataclass_fields__ else {}
    spec = WorkerSpec(env=env, n_envs=16, num_candidates=4, planner=envs.spec(env).planner(),
                      networks=NetworkConfig(), seed=0, **extra)  # fmt: skip
    torch.manual_seed(0)
    worker = RolloutWorker(0, spec)
    real, virtual, _ = worker.collect(FragmentId(0, 0, 0), steps, None, 0)
    out = {}
    for kind, part in (("real", real), ("virtual", virtual)):
        for name, a in part._asdict().items():
            if a is not None:
                out[f"{kind}.{name}"] = hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
    return out


def _numbers(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in CLOCK and not k.startswith("time/")}


def run_rows(env: str, iterations: int = 20) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, str(ROOT / "launch.py"), "--env", env, "--serial", "--seed", "0",
             "--total-env-steps", str(2048 * iterations), "--eval-every", "0",
             "--final-eval-episodes", "0", "--runs-dir", tmp, "--run-name", "fp",
             "--wandb-mode", "disabled", "--no-progress", "--checkpoint-every", "1000"],
            check=True, capture_output=True, cwd=ROOT,
        )  # fmt: skip
        lines = (Path(tmp) / "fp" / "metrics.jsonl").read_text().splitlines()
    return [_numbers(json.loads(line)) for line in lines]


def digest(rows: list[dict], keys: list[str] | None = None) -> str:
    if keys is not None:
        rows = [{k: r.get(k) for k in keys} for r in rows]
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def fingerprint() -> dict:
    out: dict = {"collect": {}, "runs": {}, "rows": {}}
    for env in ENVS:
        out["collect"][env] = collect_hashes(env)
        rows = run_rows(env)
        out["rows"][env], out["runs"][env] = rows, digest(rows)
        print(f"{env}: collect of {len(out['collect'][env])} arrays, run {out['runs'][env][:16]}",
              flush=True)  # fmt: skip
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="write the fingerprint here")
    p.add_argument("--compare", type=Path, help="a fingerprint made earlier on this machine")
    p.add_argument("--ignore-new", action="store_true",
                   help="compare on the earlier fingerprint's metric keys and arrays only")
    a = p.parse_args()
    now = fingerprint()
    if a.out:
        a.out.write_text(json.dumps(now, indent=1))
    if not a.compare:
        return 0
    before = json.loads(a.compare.read_text())
    same = True
    for env in ENVS:
        keys = sorted(before["rows"][env][0]) if a.ignore_new else None
        runs_now = digest(now["rows"][env], keys)
        runs_before = digest(before["rows"][env], keys)
        old, new = before["collect"][env], now["collect"][env]
        if isinstance(old, str):
            raise SystemExit(f"{a.compare} holds one hash per collect: make it again with this script")
        arrays = sorted(old) if a.ignore_new else sorted(set(old) | set(new))
        collect_same = all(old.get(k) == new.get(k) for k in arrays)
        for what, same_ in (("collect", collect_same), ("run", runs_now == runs_before)):
            print(f"fingerprint_{env}_{what}_identical: {same_}")
            same &= same_
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
