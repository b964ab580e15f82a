"""rlmpc entry point: ``python launch.py --help``.

Imports the installed project only, so it also works when it is the only file copied to a
cluster's head node.
"""

from rlmpc.demo import main

if __name__ == "__main__":
    main()
