"""Together AI's fine-tuning API (`backend.TogetherBackend`, `kind: together`): jobs, quotes,
serverless or dedicated-endpoint scoring. Loaded by name from `harness.backends.registry`."""
