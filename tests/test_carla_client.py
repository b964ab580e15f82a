"""CarlaSim's client layer on the in-process server double (`tests.carla_double`): the map
check, time-outs after connecting, waiting for a lost server, traffic managers, rendering."""

from __future__ import annotations

import pickle
import sys
import threading
import time

import numpy as np
import pytest

from envs.base import SimulatorUnavailable
from envs.racing.carla_client import CarlaMapMissing, CarlaUnavailable, ClientParams, town_names
from envs.racing.carla_env import CarlaRacingEnv
from envs.racing.carla_sim import CarlaSim
from tests.carla_double import MAIN_TOWNS, fake_carla

FAST = dict(timeout=0.1, attempts=2, backoff=0.0, max_backoff=0.05)


@pytest.fixture
def carla(monkeypatch):
    def install(**kw):
        mod = fake_carla(**kw)
        monkeypatch.setitem(sys.modules, "carla", mod)
        return mod

    return install


def make_env(**client) -> CarlaRacingEnv:
    return CarlaRacingEnv(client=ClientParams(**{**FAST, **client}))


def test_a_server_without_the_town_is_refused_naming_it_and_how_to_install_it(carla):
    mod = carla(maps=MAIN_TOWNS, town="Town10HD_Opt")  # what carlasim/carla:0.9.16 ships
    with pytest.raises(CarlaMapMissing) as err:
        make_env()
    msg = str(err.value)
    for part in ("Town07", "AdditionalMaps_0.9.16", "ImportAssets.sh", "cluster/README.md",
                 "Town10HD_Opt", "127.0.0.1:2000"):  # fmt: skip
        assert part in msg, part
    assert err.value.town == "Town07" and "Town07" not in err.value.available
    assert mod.SERVER.loads == 0 and mod.WORLD.actors == []  # nothing loaded, nothing spawned
    assert not isinstance(err.value, SimulatorUnavailable)  # not a reason to wait and retry
    again = pickle.loads(pickle.dumps(err.value))  # crosses Ray as itself
    assert str(again) == msg and again.available == err.value.available


def test_a_town_the_server_has_but_has_not_loaded_is_loaded_once(carla):
    mod = carla(town="Town10HD_Opt")
    env = make_env()
    assert mod.SERVER.loads == 1 and mod.WORLD.town == "Town07"
    env.close()


def test_town_names_of_available_maps():
    maps = ["/Game/Carla/Maps/Town07", "/Game/Carla/Maps/Town01_Opt", "/Game/Carla/Maps/Town07"]
    assert town_names(maps) == ("Town01_Opt", "Town07")


@pytest.mark.parametrize("call", ["get_world", "load_world", "apply_settings"])
def test_a_time_out_after_connecting_is_carla_unavailable_naming_the_call(carla, call):
    mod = carla(town="Town10HD_Opt")  # so that load_world is called
    mod.SERVER.fail_calls = {call}
    with pytest.raises(CarlaUnavailable, match=f"{call}: time-out"):
        make_env()


def test_a_time_out_while_reconnecting_is_carla_unavailable_too(carla):
    """Issue: reconnect() called _connect() outside its try, so a time-out in get_world (or
    load_world, apply_settings, get_trafficmanager) escaped as a plain RuntimeError."""
    mod = carla()
    env = make_env(reconnect_wait=0.0)
    env.reset(seed=0)
    mod.SERVER.fail_ticks = 1
    assert env.step(np.zeros(2, np.float32))[4]["server_lost"]
    mod.SERVER.fail_calls = {"get_world"}
    with pytest.raises(CarlaUnavailable, match="get_world: time-out"):
        env.reset(seed=1)
    mod.SERVER.fail_calls = set()
    env.reset(seed=2)  # back: the env was left intact
    assert not env.step(np.zeros(2, np.float32))[4]["server_lost"]


def test_the_next_reset_waits_for_a_server_that_comes_back(carla):
    mod = carla()
    env = make_env(reconnect_wait=10.0)
    env.reset(seed=0)
    mod.SERVER.up = False
    assert env.step(np.zeros(2, np.float32))[4]["server_lost"]
    threading.Timer(0.4, lambda: setattr(mod.SERVER, "up", True)).start()
    start = time.monotonic()
    env.reset(seed=1)
    assert 0.3 < time.monotonic() - start < 5.0
    assert not env.step(np.zeros(2, np.float32))[4]["server_lost"]


def test_a_server_that_stays_away_fails_the_reset_after_reconnect_wait(carla):
    mod = carla()
    env = make_env(reconnect_wait=0.3)
    env.reset(seed=0)
    mod.SERVER.up = False
    env.step(np.zeros(2, np.float32))
    start = time.monotonic()
    with pytest.raises(CarlaUnavailable, match="reconnect_wait=0.3 s"):
        env.reset(seed=1)
    assert 0.3 <= time.monotonic() - start < 3.0


def test_a_reconnect_shuts_the_old_traffic_manager_down_first(carla):
    """LibCarla keeps one traffic manager per port per process: without shutting it down,
    get_trafficmanager(port) would hand back the dead server's."""
    mod = carla()
    env = CarlaRacingEnv(client=ClientParams(**FAST), opponent_driver="traffic_manager")
    (old,) = mod.TMS
    assert old.sync is True and old.port == 8000
    env.reset(seed=0)
    mod.SERVER.fail_ticks = 1
    env.step(np.zeros(2, np.float32))
    env.reset(seed=1)
    assert [tm.alive for tm in mod.TMS] == [False, True] and env.sim.tm is mod.TMS[1]
    env.close()


def test_a_second_traffic_manager_env_in_one_process_is_refused(carla):
    carla()
    first = CarlaRacingEnv(client=ClientParams(**FAST), opponent_driver="traffic_manager")
    with pytest.raises(ValueError, match="one CARLA env per process"):
        CarlaRacingEnv(client=ClientParams(**FAST), opponent_driver="traffic_manager",
                       port=2003, tm_port=8001)  # fmt: skip
    pursuit = CarlaRacingEnv(client=ClientParams(**FAST), port=2003, tm_port=8001)
    first.close()
    second = CarlaRacingEnv(client=ClientParams(**FAST), opponent_driver="traffic_manager",
                            port=2006, tm_port=8002)  # fmt: skip
    for env in (pursuit, second):
        env.close()


def test_rendering_is_off_unless_asked_for(carla):
    mod = carla()
    CarlaRacingEnv(client=ClientParams(**FAST), rendering=True).close()
    assert mod.WORLD.settings.no_rendering_mode is False
    make_env().close()
    assert mod.WORLD.settings.no_rendering_mode is False  # close gives the world back...
    env = make_env()
    assert mod.WORLD.settings.no_rendering_mode is True  # ...and a new env turns it off
    env.close()


def test_a_failed_construction_leaves_no_traffic_manager_claim(carla):
    mod = carla()
    mod.SERVER.fail_calls = {"get_trafficmanager"}
    with pytest.raises(CarlaUnavailable, match="get_trafficmanager"):
        CarlaRacingEnv(client=ClientParams(**FAST), opponent_driver="traffic_manager")
    assert not CarlaSim._tm_sims


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_bad_reconnect_wait_is_refused(value):
    with pytest.raises(ValueError, match="reconnect_wait"):
        ClientParams(reconnect_wait=value)
