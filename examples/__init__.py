"""Examples of the project's extension points (docs/custom_env.md walks through them)."""
