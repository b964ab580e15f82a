"""Tools around the system: benchmarks, the planner-alone check, results, demo, CARLA servers."""
