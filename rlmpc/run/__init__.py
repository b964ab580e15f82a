"""Running a training run: configuration, command line, the run log, evaluation and its media."""
