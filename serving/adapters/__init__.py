"""The adapter registry: validated, versioned, aliased LoRA adapters hot-loaded into every engine replica."""
