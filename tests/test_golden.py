"""The reference profile reproduces the official NITRO-D implementation bit for bit."""
import numpy as np
import pytest

from golden_cases import CASES, MaskFeeder, build_golden_model


def _assert_weights(model, arr, prefix):
    names = [k.split("/", 1)[1] for k in arr if k.startswith(prefix + "/")]
    assert sorted(names) == sorted(model.weights)
    for n in names:
        np.testing.assert_array_equal(model.weights[n], arr[f"{prefix}/{n}"], err_msg=f"{prefix}/{n}")


@pytest.mark.parametrize("case", CASES)
def test_reference_profile_matches_official_weights_and_logits(case):
    model, meta, arr = build_golden_model(case)
    feeder = MaskFeeder(arr)
    if feeder.masks:
        model.mask_hook = feeder
    np.testing.assert_array_equal(model.forward(arr["x"][0]), arr["logits_before"])
    for step in range(meta["steps"]):
        feeder.step = step
        model.train_step(arr["x"][step], arr["y"][step], meta["lr_inv"])
        np.testing.assert_array_equal(model.last_y_hat, arr["y_pred_train"][step], err_msg=f"y_hat step {step}")
        if step == 0:
            _assert_weights(model, arr, "after_step1")
    _assert_weights(model, arr, "after")
    np.testing.assert_array_equal(model.forward(arr["x"][0]), arr["logits_after"])
