"""What every hosted fine-tuning backend shares (OpenAI-compatible endpoints and Together):
training files, token counts, job keys, epoch points, scoring by logprobs, the dated price
table (`pricing`, `prices.yaml`) and the common config (`config.HostedConfig`)."""
