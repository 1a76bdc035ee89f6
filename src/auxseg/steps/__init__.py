"""Pipeline steps: one module per DVC stage, each with a single public ``run(...)`` entry point."""
