"""Local backends, on this machine's CPU or GPU: `encoder.LocalBackend` (a sequence-classification
head on a transformers encoder, `kind: local`) and `lm.LocalLMBackend` (a causal LM with LoRA,
`kind: local_lm`), with their shared calibration, model folders and epoch loop. Loaded by name
from `harness.backends.registry`: importing this package imports nothing heavy."""
