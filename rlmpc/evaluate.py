"""``python -m rlmpc.evaluate``: evaluate a checkpoint (`rlmpc.run.evaluate`)."""

from rlmpc.run.evaluate import main

if __name__ == "__main__":
    main()
