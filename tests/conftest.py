import os

import pytest
import torch

# Two cores on CI: keep torch from oversubscribing them when Ray workers run beside the tests.
torch.set_num_threads(int(os.environ.get("RLMPC_TEST_THREADS", "1")))

ENV_NAMES = ["acrobot", "lunarlander", "racing"]


@pytest.fixture(params=ENV_NAMES)
def env_name(request) -> str:
    return request.param
