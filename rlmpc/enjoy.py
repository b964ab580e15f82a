"""``python -m rlmpc.enjoy RUN_DIR``: watch a trained agent in the env's own frames (`rlmpc.run.enjoy`)."""

from rlmpc.run.enjoy import main

if __name__ == "__main__":
    main()
