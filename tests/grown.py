"""Weights far from a fresh initialisation, for the kernels' slow paths."""
import numpy as np


def grow(model, seed: int):
    """Set every weight to a random sign times a log-uniform magnitude up to 90 % of the weight width's range, each
    row of a tensor at its own scale: the back-propagated errors of different units then fall on both sides of
    2^15, gradient sums exceed int32, and updates saturate."""
    r = np.random.default_rng(seed)
    top = np.log(0.9 * 2 ** (model.weight_bits - 1))
    new = {}
    for k, w in model.weights.items():
        scale = r.uniform(0, top, (w.shape[0],) + (1,) * (w.ndim - 1))
        mag = np.exp(r.uniform(0, 1, w.shape) * scale)
        new[k] = (np.where(r.integers(0, 2, w.shape) == 1, 1, -1) * np.floor(mag)).astype(np.int64)
    model.load_weights(new)
    return model
