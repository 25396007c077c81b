"""``/v1/completions``: text completions proxied to the engine."""
