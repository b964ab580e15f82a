import os
from pathlib import Path

import pytest
import torch

# Two cores on CI: keep torch from oversubscribing them when Ray workers run beside the tests.
torch.set_num_threads(int(os.environ.get("RLMPC_TEST_THREADS", "1")))

ENV_NAMES = ["acrobot", "lunarlander", "racing", "racing-stadium"]


def seed_offset() -> int:
    """Added to the episode seeds of the tests that assert a rate over seeded chaotic rollouts
    (``RLMPC_TEST_SEED_OFFSET``, default 0): the same tests on episodes they were not written on."""
    return int(os.environ.get("RLMPC_TEST_SEED_OFFSET", "0"))


@pytest.fixture(params=ENV_NAMES)
def env_name(request) -> str:
    return request.param


@pytest.fixture
def carla_root(tmp_path: Path) -> Path:
    """A CARLA root whose launcher starts the stand-in server (`tests.carla_standin`)."""
    from tests.carla_standin import write_launcher

    root = tmp_path / "carla"
    write_launcher(root)
    return root


@pytest.fixture
def state_dir(tmp_path: Path):
    """A node's server state directory; servers and a watchdog left running are stopped."""
    from rlmpc.ops import carla_servers as cs

    d = tmp_path / "state"
    yield d
    cs.stop_servers(d, grace_s=2.0)
