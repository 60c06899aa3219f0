"""The trainer wing: NITRO-D in NumPy integer semantics (docs/arithmetic.md).

arith (the integer contract), rng (SplitMix64 streams), gemm and intgemm (exact integer products: the native
kernels of native/intgemm.c, NumPy int64 as reference), layers, blocks, network (a model from its description),
optim (IntegerSGD), profiles (quirk switches), data (datasets to batches), loop (epochs, schedule, model
selection); malloc is an opt-in allocator setting for training programs.
"""
