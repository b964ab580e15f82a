"""The stand-in ``carla`` client (`tests.carla_standin`) under the real package's name, for
processes (Ray workers in tests) whose PYTHONPATH puts ``tests/standin_client`` first."""

from tests.carla_standin import install_client

install_client(globals())
