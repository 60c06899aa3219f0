"""The trainer wing: NITRO-D's integer arithmetic contract, layers, blocks, networks, IntegerSGD, data and the
training loop, all in NumPy integer semantics (docs/arithmetic.md)."""
