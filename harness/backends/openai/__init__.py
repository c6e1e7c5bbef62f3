"""The OpenAI fine-tuning API and the endpoints that speak it (`backend.OpenAIBackend`,
`kind: openai`): provider profiles for OpenAI, Azure OpenAI (with its deployments) and Nebius.
Loaded by name from `harness.backends.registry`; importing this package imports no SDK."""
