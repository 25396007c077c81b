"""``GET /v1/models``: the base model and every registered adapter, version and alias."""
