"""One answer for MACs and memory: summary and the cost report read the same plan (nitro_mcu.codegen.cost)."""
import pytest

from nitro_mcu import api
from nitro_mcu.codegen.cost import fp32_backprop_bytes, op_macs, tensor_macs
from nitro_mcu.codegen.plan import plan
from nitro_mcu.spec import PRESETS, preset
from nitro_mcu.trainer.network import Model


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_summary_macs_equal_the_report_macs(name):
    model = Model(preset(name), "default", 16)
    rows = api.summary_rows(model)
    report = op_macs(plan(model, batch=8, train=True, name="m"))  # what `report` counts for batch 8
    infer, train = sum(r["macs"] for r in rows), sum(r["train_macs"] for r in rows)
    assert infer == sum(r["infer_macs"] for r in report) > 0
    assert 8 * train == sum(r["train_macs"] for r in report) > 8 * infer
    assert all(r["macs"] == 0 for r in rows if r["name"].endswith(".head"))  # heads run only in training
    total = api.summary(model).splitlines()[-1].split()
    assert [int(v) for v in total[-3:-1]] == [infer, train]


def test_mcu_cnn_macs_and_what_inference_leaves_out():
    model = Model(preset("mcu_cnn"), "default", 16)
    report = op_macs(plan(model, batch=8, train=True))
    assert sum(r["infer_macs"] for r in report) == 527_104
    assert sum(r["train_macs"] for r in report) == 5_585_344
    macs = tensor_macs(model)
    heads = sum(int(s[0]) * int(s[1]) for n, s in model.param_shapes().items() if n.endswith(".head"))
    assert heads == 14_160 and all(macs[n][0] == 0 for n in macs if n.endswith(".head"))
    assert [r["name"] for r in report] == ["conv0", "maxpool1", "conv1", "maxpool3", "conv2", "maxpool5", "fc0",
                                           "output"]
    inference = op_macs(plan(model))
    assert [r["infer_macs"] for r in inference] == [r["infer_macs"] for r in report]
    assert all(r["train_macs"] == 0 for r in inference)


def test_float32_backprop_estimate_counts_the_plain_network():
    model = Model(dict(kind="mlp", input_shape=[6], num_classes=3, hidden=[4], dropout=0.1), "default", 16)
    fp = fp32_backprop_bytes(model, 2)
    weights = 4 * 6 + 3 * 4  # no heads
    acts = (6 + 2 * 4) + 4 + (4 + 3)  # block input + pre-activation + output, dropout mask, output layer in + out
    assert fp == dict(weights=4 * weights, gradients=4 * weights, activations=4 * 2 * acts,
                      total=8 * weights + 4 * 2 * acts)
