"""Mixed input types in one model (issue 22): an op fed int8 in one place and int16 (a dropout's output) in
another gets two kernels in the same <name>_kernels.h, and every helper they share is emitted once.  The
models are generated, compiled and trained on the host bit-exactly against Python, and the mixed CNN of the
issue also on the emulated Cortex-M4."""
import numpy as np
import pytest
from device_cases import Synthetic
from kernel_cases import MIXED_ALL, MIXED_CNN, MIXED_MLP

from nitro_mcu.device.compiled import compile_model
from nitro_mcu.codegen.ops import Kernel
from nitro_mcu.codegen.render import convert
from nitro_mcu.device.harness import run_host_harness
from nitro_mcu.device.protocol import Session
from nitro_mcu.device.verify import verify
from nitro_mcu.trainer.network import Model

# each model, the kernels it must hold for both input types, and its batch
MODELS = {
    "mixed_cnn": (MIXED_CNN, [Kernel("conv_step", "s8"), Kernel("conv_step", "s16")], 2),
    "mixed_all": (MIXED_ALL, [Kernel("conv_step", "s8"), Kernel("conv_step", "s16"), Kernel("maxpool", "s8"),
                              Kernel("maxpool", "s16"), Kernel("linear_step", "s8"), Kernel("linear_step", "s16"),
                              Kernel("dropout", "s8"), Kernel("dropout", "s16")], 3),
    "mixed_mlp": (MIXED_MLP, [Kernel("linear_step", "s8"), Kernel("linear_step", "s16"),
                              Kernel("row_update", "s8"), Kernel("row_update", "s16")], 5),
}


def _data(model, n=200):
    d = Synthetic(tuple(model.input_shape), n=n, seed=7)
    d.y_train = d.y_train % model.num_classes
    d.y_test = d.y_test % model.num_classes
    return d


@pytest.mark.parametrize("profile", ["default", "reference"])
@pytest.mark.parametrize("bits", [16, 32])
@pytest.mark.parametrize("which", sorted(MODELS))
def test_an_op_fed_int8_and_int16_in_one_model_compiles_and_trains_bit_exactly(which, bits, profile):
    spec, both, batch = MODELS[which]
    model = Model(spec, profile, bits, seed=4)
    cm = compile_model(model, batch=batch, train=True, name=f"mix_{which}")
    missing = [k for k in both if k not in cm.plan.kernels]
    assert not missing, f"the model no longer mixes input types: {missing} not emitted"
    data = _data(model)
    start = {k: v.copy() for k, v in model.weights.items()}
    lr = 16  # small, so that every tensor moves within the run
    cm.set_lr_inv(lr)
    for s in range(12):
        x, y = data.x_train[s * batch:(s + 1) * batch], data.y_train[s * batch:(s + 1) * batch]
        assert cm.train_batch(x, y) == model.train_step(x, y, lr).correct, f"step {s + 1}: correct count"
        got = cm.get_weights()
        for name, w in model.weights.items():
            assert np.array_equal(got[name], w), f"step {s + 1}: {name} differs between C and Python"
        assert cm.rng_state == model.dropout_rng.state, f"step {s + 1}: PRNG state"
    still = [k for k, w in model.weights.items() if np.array_equal(w, start[k])]
    assert not still, f"tensors that never moved prove nothing: {still}"
    scores, cls = cm.predict_scores(data.x_test)
    np.testing.assert_array_equal(scores, model.predict_scores(data.x_test))
    np.testing.assert_array_equal(cls, model.predict(data.x_test))


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_the_mixed_models_build_warning_free_and_train_clean_under_ubsan_and_asan(cc):
    """The host harness (HOST_HARNESS_CFLAGS: -Wall -Wextra -Wconversion -Wsign-conversion -Wshadow -Werror)
    with the sanitizers; its weights after training are Python's."""
    for which in sorted(MODELS):
        spec, _, batch = MODELS[which]
        model = Model(spec, "default", 16, seed=4)
        data = _data(model)
        conv = convert(model, batch=batch, train=True, name="mixsan")
        s = Session(int(np.prod(model.input_shape)))
        for i in range(4):
            x, y = data.x_train[i * batch:(i + 1) * batch], data.y_train[i * batch:(i + 1) * batch]
            s.train(x, y)
            model.train_step(x, y, model.spec["lr_inv"])
        s.weights()
        weights, rng, _ = run_host_harness(conv, s, cc=cc, sanitize=True)[-1]
        for k, w in model.weights.items():
            np.testing.assert_array_equal(weights[k], w, err_msg=f"{which}: {k}")
        assert rng == model.dropout_rng.state


def test_the_issue_22_mixed_cnn_trains_bit_exactly_on_the_emulated_m4():
    model = Model(MIXED_CNN, "default", 16, seed=4)
    rep = verify(model, _data(model), "m4", steps=12, batch=2, predictions=20, lr_schedule={0: 16}, name="mixcnn")
    assert rep.passed, rep.problem()
    assert rep.correct_device == rep.correct_python
    for t in rep.tensors:  # every tensor moved, by the same count on the device and in Python
        assert t.count and 0 < t.changed == t.changed_device, (t.name, t.changed, t.changed_device)
    assert rep.final.rng_python != model.dropout_rng.state  # the dropout drew from the PRNG
