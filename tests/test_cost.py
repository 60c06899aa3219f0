"""One answer for MACs and memory: summary and the cost report read the same plan (nitro_mcu.codegen.cost)."""
import re
from pathlib import Path

import numpy as np
import pytest

from nitro_mcu import api
from nitro_mcu.codegen.cost import fp32_backprop_bytes, op_macs, tail_ram, tensor_macs
from nitro_mcu.codegen.plan import plan
from nitro_mcu.codegen.render import convert
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


@pytest.mark.parametrize("name", ["mcu_cnn", "cnn_small"])
def test_executed_inference_macs_are_the_conv_positions_its_fused_pool_reads(name):
    """The executed count against one found from the trainer's pool: a conv output position is computed when
    raising it alone changes the following max-pool's output (a 7x7 map under a 2x2 pool: 36 of 49)."""
    model = Model(preset(name), "default", 16)
    rows = {r["name"]: r for r in op_macs(plan(model))}
    stages = model.stages
    for i, st in enumerate(stages):
        if getattr(st, "kind", None) != "conv":
            continue
        pool = stages[i + 1] if i + 1 < len(stages) and type(stages[i + 1]).__name__ == "MaxPool" else None
        read = st.h_out * st.w_out
        if pool is not None:
            x = np.zeros((1, st.h_out, st.w_out, 1), np.int16)  # NHWC, as the trainer pools
            base, read = pool.forward(x), 0
            for pos in range(st.h_out * st.w_out):
                x.flat[:] = 0
                x.flat[pos] = 1
                read += int(np.any(pool.forward(x) != base))
        r = rows[st.name]
        assert r["infer_macs_executed"] == st.fan_in * st.c_out * read <= r["infer_macs"]
    executed = sum(r["infer_macs_executed"] for r in rows.values())
    assert executed == (467_200 if name == "mcu_cnn" else sum(r["infer_macs"] for r in rows.values()))


def codegen_md() -> str:
    """docs/codegen.md with its line breaks as spaces (a figure may wrap)."""
    return " ".join((Path(__file__).resolve().parents[1] / "docs" / "codegen.md").read_text().split())


def test_codegen_md_quotes_the_tail_ram_generate_prints():
    """docs/codegen.md's mcu_cnn figures (int16, batch 8) are the rows `generate --train` prints (tail_ram)."""
    text = codegen_md()
    quoted = re.search(r"`mcu_cnn`, int16, batch 8: output only ([\d,]+) B, fc0..output ([\d,]+) B, "
                       r"full training ([\d,]+) B", text).groups()
    rows = {r["label"]: r["ram_bytes"] for r in tail_ram(Model(preset("mcu_cnn"), weight_bits=16), 8)}
    assert [int(q.replace(",", "")) for q in quoted] == [rows["output"], rows["fc0..output"],
                                                         rows["all (full training)"]]


def test_codegen_md_quotes_the_inference_arena_generate_prints():
    text = codegen_md()
    quoted = re.search(r"`generate mcu_cnn` prints an inference arena of ([\d,]+) B", text).group(1)
    arena = convert(Model(preset("mcu_cnn"), weight_bits=16), batch=1, train=False).plan.arena_bytes
    assert int(quoted.replace(",", "")) == arena


def test_adaptation_md_table_is_the_tail_ram_generate_prints():
    """docs/adaptation.md's table of what trains (mcu_cnn, int16, batch 8) holds tail_ram's rows, in order."""
    import re
    from pathlib import Path

    from nitro_mcu.codegen.cost import tail_ram

    text = (Path(__file__).resolve().parents[1] / "docs" / "adaptation.md").read_text()
    quoted = [[int(v.replace(",", "")) for v in m] for m in
              re.findall(r"^\| [^|]+ \| \**([\d,]+) B\** \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \|$", text, re.M)]
    rows = tail_ram(Model(preset("mcu_cnn"), weight_bits=16), 8)
    assert quoted == [[r["ram_bytes"], r["weight_ram_bytes"], r["arena_bytes"], r["weight_flash_bytes"]]
                      for r in rows]
