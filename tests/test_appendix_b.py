"""The worked micro-example of docs/algorithm.md Appendix B, every number typed from the document."""
import numpy as np

from nitro_mcu.trainer import layers as L
from nitro_mcu.trainer.network import Model

SPEC = dict(kind="mlp", input_shape=[4], num_classes=2, hidden=[3], lr_inv=4, lr_amp_factor=8,
            fwd_decay_inv=500, head_decay_inv=300)
X = np.array([[100, -50, 20, 127], [-128, 60, 5, -30]], dtype=np.int8)
Y = np.array([0, 1])
W0 = {
    "block0.fwd": np.array([[300, -200, 150, 520], [-400, 100, 250, -60], [90, 310, -505, 200]]),
    "block0.head": np.array([[350, -120, 200], [-310, 260, 180]]),
    "output": np.array([[200, 300, -150], [-250, 100, 320]]),
}


def _model(profile="reference"):
    return Model(SPEC, profile, weights=W0)


def test_forward_intermediates_match_worked_example():
    z = L.linear_forward(X, W0["block0.fwd"])
    np.testing.assert_array_equal(z, [[109040, -47620, 8800], [-65250, 60250, -1445]])
    s = L.scaling(z, 1024)
    np.testing.assert_array_equal(s, [[106, -46, 8], [-63, 58, -1]])
    h = L.relu_forward(s, 4)
    np.testing.assert_array_equal(h, [[70, -47, -28], [-51, 22, -36]])
    np.testing.assert_array_equal(_model().forward(X), [[5, -40], [2, 4]])
    np.testing.assert_array_equal(L.scaling(L.linear_forward(h, W0["block0.head"]), 768), [[31, -50], [-36, 19]])
    delta = L.matmul_exact(np.array([[-1, -50], [-36, -13]]), W0["block0.head"])
    np.testing.assert_array_equal(delta, [[15150, -12880, -9200], [-8570, 940, -9540]])
    np.testing.assert_array_equal(L.relu_backward(delta, s, 4, True), [[15150, -3220, -9200], [-2142, 940, -2385]])


def test_one_step_gives_the_documented_weights():
    m = _model()
    m.train_step(X, Y, lr_inv=4)
    np.testing.assert_array_equal(m.weights["block0.fwd"], [[-55611, 27488, -8984, -61615],
                                                            [13422, -6693, 2115, 13600],
                                                            [19300, -9593, 5618, 34476]])
    np.testing.assert_array_equal(m.weights["block0.head"], [[-92, 66, -131], [400, -256, -287]])
    np.testing.assert_array_equal(m.weights["output"], [[698, -29, -321], [93, -216, -213]])


def test_default_profile_agrees_when_no_quirk_fires():
    # No error wraps and no CNN in this example, so both profiles give the same numbers.
    a, b = _model("reference"), _model("default")
    a.train_step(X, Y, 4)
    b.train_step(X, Y, 4)
    for k in a.weights:
        np.testing.assert_array_equal(a.weights[k], b.weights[k])


def test_int16_weights_saturate_instead_of_wrapping():
    m = Model(SPEC, "reference", weight_bits=16, weights={k: v.astype(np.int16) for k, v in W0.items()})
    m.train_step(X, Y, 4)
    # -55611 and -61615 do not fit int16: saturated, never wrapped.
    assert m.weights["block0.fwd"][0, 0] == -32768 and m.weights["block0.fwd"][0, 3] == -32768
    assert m.weights["block0.fwd"][2, 3] == 32767 and m.weights["block0.fwd"][1, 0] == 13422
