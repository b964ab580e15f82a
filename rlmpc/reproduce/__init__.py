"""Reproduce the paper's tables and figures: experiments by name (`catalog`), cells as Ray
Tune trials (`cells`, `sweep`), tables and curves from the results' JSON (`report`).
``python -m rlmpc.reproduce --help``."""
