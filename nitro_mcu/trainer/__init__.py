"""The trainer wing: NITRO-D in NumPy integer semantics (docs/arithmetic.md).

arith (the integer contract), rng (SplitMix64 streams), gemm (exact products on float BLAS), layers, blocks,
network (a model from its description), optim (IntegerSGD), profiles (quirk switches), data (datasets to
batches), loop (epochs, schedule, model selection); malloc is an opt-in allocator setting for training programs.
"""
