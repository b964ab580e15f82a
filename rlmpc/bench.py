"""``python -m rlmpc.bench {planner,system,sb3}``: throughput benchmarks (`rlmpc.tools.bench`)."""

from rlmpc.tools.bench import main

if __name__ == "__main__":
    main()
