"""What an application reads from the generated header: class names (from the training data or --classes, as C
strings that survive quotes, backslashes and UTF-8), the input scaling statistics, the lr_inv where host
training ended as <NAME>_LR_INV_INIT, and the model's name as the default C prefix.  Each is read back by a
compiled C program, not by matching the text."""
from __future__ import annotations

import json
import subprocess

import pytest

import nitro_mcu as nm
from nitro_mcu import cli
from nitro_mcu.codegen import convert

SPEC = dict(kind="mlp", input_shape=[1, 28, 28], num_classes=10, hidden=[16])
NAMES = ["zero", 'say "one"', "back\\slash", "tri??=graph", "été", "five", "6", "seven", "eight", "nine"]

PROGRAM = r"""
#include <stdio.h>
#include "PREFIX.h"
int main(void)
{
    const int32_t mu[UPPER_INPUT_CHANNELS] = UPPER_INPUT_MU, mad[UPPER_INPUT_CHANNELS] = UPPER_INPUT_MAD;
    PREFIX_init();
    printf("lr_inv_init %ld get %ld\n", (long)UPPER_LR_INV_INIT, (long)PREFIX_get_lr_inv());
    printf("mu %ld mad %ld\n", (long)mu[0], (long)mad[0]);
    for (int32_t c = -1; c <= UPPER_NUM_CLASSES; ++c) {
        const char *n = PREFIX_class_name(c);
        printf("class %ld %s\n", (long)c, n ? n : "(null)");
    }
    return 0;
}
"""


def _run_c(folder, prefix):
    (folder / "main.c").write_text(PROGRAM.replace("PREFIX", prefix).replace("UPPER", prefix.upper()))
    exe = folder / "main"
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I", str(folder), str(folder / "main.c"),
                    str(folder / f"{prefix}.c"), "-o", str(exe)], check=True, capture_output=True, text=True)
    return subprocess.run([str(exe)], check=True, capture_output=True).stdout.decode("utf-8").splitlines()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A model trained two epochs with lr_inv 512 then 1536, on data whose classes carry awkward names."""
    d = tmp_path_factory.mktemp("hdr")
    model = nm.build(SPEC, seed=1)
    data = nm.load_data("bundled", seed=1)
    data.classes = tuple(NAMES)
    hist = nm.train(model, data, epochs=2, lr_schedule=[512, 1536], progress=False)
    return nm.save(model, d / "my-model.v2.nitro", data=data, history=hist), data


def test_the_header_carries_class_names_scaling_and_the_final_lr_inv(model_file, tmp_path, capsys):
    path, data = model_file
    assert cli.main(["generate", str(path), "--train", "--out", str(tmp_path / "fw")]) == 0
    capsys.readouterr()
    # the model's name as the prefix: my-model.v2 -> my_model_v2
    assert sorted(p.name for p in (tmp_path / "fw").iterdir() if p.suffix in (".h", ".c")) == \
        ["my_model_v2.c", "my_model_v2.h", "my_model_v2_kernels.h"]
    lines = _run_c(tmp_path / "fw", "my_model_v2")
    assert lines[0] == "lr_inv_init 1536 get 1536"          # where host training ended, not the initial 512
    assert lines[1] == f"mu {int(data.mu[0])} mad {int(data.mad[0])}"
    assert lines[2] == "class -1 (null)" and lines[-1] == "class 10 (null)"
    assert lines[3:13] == [f"class {i} {n}" for i, n in enumerate(NAMES)]


def test_classes_option_overrides_and_a_wrong_count_is_one_line(model_file, tmp_path, capsys):
    path, _ = model_file
    names = [f"c{i}" for i in range(10)]
    assert cli.main(["generate", str(path), "--train", "--out", str(tmp_path / "fw"), "--name", "k",
                     "--classes", ",".join(names)]) == 0
    lines = _run_c(tmp_path / "fw", "k")
    assert lines[3:13] == [f"class {i} {n}" for i, n in enumerate(names)]
    capsys.readouterr()
    assert cli.main(["generate", str(path), "--out", str(tmp_path / "x"), "--classes", "a,b"]) == 2
    err = capsys.readouterr().err
    assert "--classes names 2 classes, the model has 10" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_a_fresh_preset_is_named_after_itself_with_index_class_names_and_its_own_lr_inv(tmp_path, capsys):
    assert cli.main(["generate", "mcu_cnn", "--train", "--out", str(tmp_path / "fw")]) == 0
    h = (tmp_path / "fw" / "mcu_cnn.h").read_text()
    assert f"#define MCU_CNN_LR_INV_INIT {nm.build('mcu_cnn').spec['lr_inv']} " in h
    assert "MCU_CNN_INPUT_MU" not in h        # no statistics without training data
    c = (tmp_path / "fw" / "mcu_cnn.c").read_text()
    assert '"0",\n    "1",' in c


def test_convert_checks_class_names_and_lr_inv():
    m = nm.build(SPEC)
    with pytest.raises(nm.codegen.CodegenError, match="3 class names for a model of 10 classes"):
        convert(m, classes=["a", "b", "c"])
    with pytest.raises(nm.codegen.CodegenError, match="lr_inv must be an integer"):
        convert(m, train=True, lr_inv=0)
    assert json.dumps(convert(m, train=True, lr_inv=77).plan.lr_inv_init) == "77"


def test_spare_class_slots_get_names_after_the_model_s_own():
    """A model grown by spare classes keeps its K names and names the new slots spare0, spare1, ... (the header's
    class_name table has NUM_CLASSES entries, the grown count)."""
    m = nm.build(SPEC)
    names = [f"c{i}" for i in range(m.num_classes)]
    src = convert(m, train=True, classes=names, spare_classes=2, name="sp").sources["sp.c"]
    table = src[src.index("class_names[SP_NUM_CLASSES] = {"):].split("};")[0]
    assert [ln.strip().strip('",') for ln in table.splitlines()[1:] if ln.strip()] == [*names, "spare0", "spare1"]
