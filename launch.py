"""rlmpc entry point: ``python launch.py --help``.

Runs on an embedded local Ray by default; under ``ray submit cluster/cluster.yaml launch.py``
it joins the running cluster. It imports the installed project only, so it also works when
it is the only file copied to a cluster's head node.

``python launch.py reproduce ARGS`` is ``python -m rlmpc.reproduce ARGS`` (the paper's
experiments as a Ray Tune sweep), so ``ray submit cluster/cluster.yaml launch.py --
reproduce table1 --ray-address auto`` runs a sweep on the cluster unchanged.
"""

import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["reproduce"]:
        from rlmpc.reproduce.__main__ import main as reproduce

        sys.exit(reproduce(sys.argv[2:]))
    from rlmpc.run.cli import main

    main()
