"""One-off command-line tools that are not pipeline stages (e.g. weight conversion)."""
