"""rlmpc entry point: ``python launch.py --help``.

Runs on an embedded local Ray by default; under ``ray submit cluster/cluster.yaml launch.py``
it joins the running cluster. It imports the installed project only, so it also works when
it is the only file copied to a cluster's head node.
"""

from rlmpc.run.cli import main

if __name__ == "__main__":
    main()
