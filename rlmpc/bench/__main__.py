"""``python -m rlmpc.bench {planner,system}`` (`rlmpc.bench.main`)."""

from rlmpc.bench import main

if __name__ == "__main__":
    main()
