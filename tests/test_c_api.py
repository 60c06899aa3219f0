"""The generated C API from a user's side: C and C++ clients that include the header and then use float /
<cmath>, named status codes for every misuse (before init, NULL pointers, bad batch, label, lr_inv, counts),
tensor descriptors with full shapes, the generation guard against mixed files, the single-header form, and
the generated CMake target and Makefile fragment."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from nitro_mcu.codegen import CodegenError, convert
from nitro_mcu.spec import preset
from nitro_mcu.trainer.network import Model

STRICT = ["-Wall", "-Wextra", "-Wconversion", "-Wsign-conversion", "-pedantic", "-Werror"]
CNN = dict(kind="cnn", input_shape=[1, 8, 8], num_classes=3, features=[["conv", 2, 3, 1, 1], ["maxpool", 2, 2]],
           fc_hidden=[5], pred_decoder_dim=16)

C_CLIENT = r"""
#include "capi.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

static void show(const char *what, int32_t v) { printf("%s %ld %s\n", what, (long)v, capi_strerror(v)); }

int main(void)
{
    static int8_t x[CAPI_MAX_BATCH * CAPI_INPUT_SIZE];
    int8_t scores[CAPI_NUM_CLASSES];
    const int32_t dims[CAPI_INPUT_RANK] = CAPI_INPUT_DIMS;
    float f = 0.25f;                       /* the application's own floats and <math.h> */
    double d = sqrt((double)f);
    memset(x, 3, sizeof x);
    show("predict_before_init", capi_predict(x, scores));
#if CAPI_TRAINABLE
    static uint8_t y[CAPI_MAX_BATCH];
    static int32_t w[CAPI_NUM_WEIGHTS];
    show("train_before_init", capi_train_batch(x, y, 1));
    show("lr_before_init", capi_set_lr_inv(512));
    show("export_before_init", capi_export_weights(w, CAPI_NUM_WEIGHTS));
    show("import_before_init", capi_import_weights(w, CAPI_NUM_WEIGHTS));
    static uint8_t hdr[16];
    const capi_storage_t no_flash = {0};
    show("ckpt_save_before_init", capi_ckpt_save(&no_flash));
    show("ckpt_load_before_init", capi_ckpt_load(&no_flash));
    show("ckpt_export_before_init", capi_ckpt_export(0u, hdr, sizeof hdr));
#endif
    capi_init();
    show("predict_null_x", capi_predict(NULL, scores));
    show("predict_no_scores", capi_predict(x, NULL));
    show("predict", capi_predict(x, scores));
#if CAPI_TRAINABLE
    show("train_null_x", capi_train_batch(NULL, y, 1));
    show("train_null_labels", capi_train_batch(x, NULL, 1));
    show("train_batch_0", capi_train_batch(x, y, 0));
    show("train_batch_over", capi_train_batch(x, y, CAPI_MAX_BATCH + 1));
    y[1] = CAPI_NUM_CLASSES;
    show("train_label", capi_train_batch(x, y, 2));
    y[1] = 0;
    show("lr_zero", capi_set_lr_inv(0));
    show("lr_negative", capi_set_lr_inv(-7));
    show("lr_ok", capi_set_lr_inv(CAPI_LR_INV_MAX));
    show("export_null", capi_export_weights(NULL, CAPI_NUM_WEIGHTS));
    show("export_count", capi_export_weights(w, 1));
    show("export", capi_export_weights(w, CAPI_NUM_WEIGHTS));
    show("import_count", capi_import_weights(w, CAPI_NUM_WEIGHTS - 1));
    show("import_null", capi_import_weights(NULL, CAPI_NUM_WEIGHTS));
#if CAPI_WEIGHT_BITS == 16
    w[0] = 40000;
    show("import_range", capi_import_weights(w, CAPI_NUM_WEIGHTS));
    w[0] = 0;
#endif
    show("import", capi_import_weights(w, CAPI_NUM_WEIGHTS));
    show("train", capi_train_batch(x, y, 2));
    show("ckpt_save_no_storage", capi_ckpt_save(&no_flash));
    show("ckpt_export", capi_ckpt_export(0u, hdr, sizeof hdr));
#endif
    for (int32_t i = 0; i < capi_num_tensors(); ++i) {
        const capi_tensor_t *t = capi_tensor(i);
        int32_t prod = 1;
        printf("tensor %s rank %ld dims", t->name, (long)t->rank);
        for (int32_t k = 0; k < CAPI_MAX_RANK; ++k) {
            printf(" %ld", (long)t->dims[k]);
            prod *= t->dims[k];
        }
        printf(" count %ld prod %ld\n", (long)t->count, (long)prod);
    }
    printf("tensor_out_of_range %d %d\n", capi_tensor(-1) == NULL, capi_tensor(CAPI_NUM_TENSORS) == NULL);
    printf("input_dims %ld\n", (long)dims[0]);
    printf("unknown %s\nfloat %.2f %.2f\n", capi_strerror(42), (double)f, d);
    return 0;
}
"""

CXX_CLIENT = r"""
#include "capi.h"
#include <cmath>
#include <cstdio>

int main()
{
    static int8_t x[CAPI_INPUT_SIZE] = {0};
    float f = std::sqrt(2.0f);            // <cmath> after the model's header
    capi_init();
    const int32_t cls = capi_predict(x, nullptr);
    std::printf("%d %.3f %s\n", static_cast<int>(cls), static_cast<double>(f), capi_strerror(CAPI_ERR_LABEL));
    return cls >= 0 && cls < CAPI_NUM_CLASSES ? 0 : 1;
}
"""


def run(cmd, cwd=None, ok=True):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, timeout=300)
    if ok:
        assert r.returncode == 0, f"{cmd}\n{r.stdout}\n{r.stderr}"
    return r


def results(stdout: str) -> dict:
    return {line.split()[0]: line.split()[1:] for line in stdout.splitlines() if line.strip()}


@pytest.fixture(scope="module", params=[("mlp", 16, True), ("cnn", 32, True), ("cnn", 16, False)],
                ids=["mlp-int16-train", "cnn-int32-train", "cnn-int16-infer"])
def generated(request, tmp_path_factory):
    kind, bits, train = request.param
    spec = dict(kind="mlp", input_shape=[12], num_classes=4, hidden=[6]) if kind == "mlp" else CNN
    d = tmp_path_factory.mktemp(f"capi-{kind}-{bits}-{int(train)}")
    convert(Model(spec, "default", bits, seed=3), batch=4, train=train, name="capi").save(file=d / "gen")
    return d, train, bits


def test_a_c_client_includes_the_header_uses_float_and_gets_named_errors(generated):
    d, train, bits = generated
    (d / "client.c").write_text(C_CLIENT)
    run(["gcc", "-std=c11", *STRICT, "-I", d / "gen", "-o", d / "client", d / "client.c", d / "gen" / "capi.c",
         "-lm"])
    out = results(run([d / "client"]).stdout)
    assert out["predict_before_init"] == ["-2", "CAPI_ERR_NOT_INITIALISED"]
    assert out["predict_null_x"] == ["-1", "CAPI_ERR_NULL"]
    assert 0 <= int(out["predict"][0]) < 4 and out["predict_no_scores"][0] == out["predict"][0]
    if train:
        for k in ("train_before_init", "lr_before_init", "export_before_init", "import_before_init",
                  "ckpt_save_before_init", "ckpt_load_before_init", "ckpt_export_before_init"):
            assert out[k] == ["-2", "CAPI_ERR_NOT_INITIALISED"], k
        assert out["train_null_x"][1] == out["train_null_labels"][1] == "CAPI_ERR_NULL"
        assert out["train_batch_0"][1] == out["train_batch_over"][1] == "CAPI_ERR_BATCH"
        assert out["train_label"] == ["-4", "CAPI_ERR_LABEL"]
        assert out["lr_zero"][1] == out["lr_negative"][1] == "CAPI_ERR_RANGE" and out["lr_ok"][1] == "CAPI_OK"
        assert out["export_null"][1] == "CAPI_ERR_NULL" and out["import_null"][1] == "CAPI_ERR_NULL"
        assert out["export_count"] == ["-6", "CAPI_ERR_COUNT"] and out["import_count"][1] == "CAPI_ERR_COUNT"
        if bits == 16:
            assert out["import_range"] == ["-5", "CAPI_ERR_RANGE"]
        assert int(out["export"][0]) > 0 and out["import"][0] == out["export"][0] and int(out["train"][0]) >= 0
        assert out["ckpt_save_no_storage"][1] == "CAPI_CKPT_ERR_ARG" and out["ckpt_export"][0] == "16"
    tensors = [line[len("tensor "):] for line in run([d / "client"]).stdout.splitlines() if line.startswith("tensor ")]
    n = int(re.search(r"#define CAPI_NUM_TENSORS (\d+)", (d / "gen" / "capi.h").read_text()).group(1))
    assert len(tensors) == n in (3, 5), tensors
    for t in tensors:
        f = t.split()
        rank, dims, count, prod = int(f[2]), [int(v) for v in f[4:8]], int(f[9]), int(f[11])
        assert rank in (2, 4) and count == prod and all(v == 1 for v in dims[rank:]), t
    if "fc0.fwd" in " ".join(tensors):
        assert any(t.startswith("conv0.fwd rank 4 dims 2 1 3 3 ") for t in tensors), tensors
    assert out["tensor_out_of_range"] == ["1", "1"] and out["unknown"] == ["unknown", "status"]
    assert out["float"] == ["0.25", "0.50"]


def test_a_cpp_client_includes_the_header_then_cmath(generated):
    d, _, _ = generated
    (d / "client.cpp").write_text(CXX_CLIENT)
    run(["gcc", "-std=c11", *STRICT, "-c", "-o", d / "capi.o", d / "gen" / "capi.c"])
    run(["g++", "-std=c++11", "-Wall", "-Wextra", "-pedantic", "-Werror", "-I", d / "gen", "-o", d / "cxx",
         d / "client.cpp", d / "capi.o"])
    out = run([d / "cxx"]).stdout.split()
    assert out[1:] == ["1.414", "CAPI_ERR_LABEL"]


def test_the_public_header_is_plain_and_the_model_files_are_poisoned(generated):
    d, _, _ = generated
    h = (d / "gen" / "capi.h").read_text()
    assert "poison" not in h and "float" not in re.sub(r"/\*.*?\*/", "", h, flags=re.S)
    assert set(re.findall(r"#include <([^>]+)>", h)) == {"stdint.h", "stddef.h"}
    for f in ("capi.c", "capi_kernels.h"):
        assert "#pragma GCC poison float double" in (d / "gen" / f).read_text(), f


def test_a_header_of_another_generator_run_does_not_compile(tmp_path):
    """The issue's case: a new .h beside an old .c compiled (and overflowed under ASan); now it is an #error."""
    old, new = tmp_path / "old", tmp_path / "new"
    convert(Model(preset("mlp1"), "default", 16), batch=2, train=True, name="m").save(file=old)
    convert(Model(dict(preset("mlp1"), hidden=[100, 40]), "default", 16), batch=2, train=True,
            name="m").save(file=new)
    for stale in ("m.h", "m_kernels.h"):
        mixed = tmp_path / f"mixed_{stale}"
        shutil.copytree(old, mixed)
        shutil.copy(new / stale, mixed / stale)
        r = run(["gcc", "-std=c11", "-c", "-o", tmp_path / "m.o", mixed / "m.c"], ok=False)
        assert r.returncode != 0 and f"{stale} is not from the generator run of m.c" in r.stderr, r.stderr
    run(["gcc", "-std=c11", *STRICT, "-c", "-o", tmp_path / "m.o", new / "m.c"])


SINGLE_CLIENT = r"""
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#pragma GCC poison float double   /* proves the header's implementation float-free */
#include "one.h"
#include <stdio.h>

int main(void)
{
    static int8_t x[ONE_MAX_BATCH * ONE_INPUT_SIZE];   /* a whole batch: train_batch reads all of it */
    static uint8_t y[ONE_MAX_BATCH];
    int8_t scores[ONE_NUM_CLASSES];
    memset(x, 5, sizeof x);
    one_init();
    printf("%ld %ld %d\n", (long)one_train_batch(x, y, ONE_MAX_BATCH), (long)one_predict(x, scores), scores[0]);
    return 0;
}
"""


def test_save_to_a_h_path_writes_one_header_holding_everything(tmp_path):
    conv = convert(Model(preset("mlp1"), "default", 16, seed=2), batch=3, train=True, name="one")
    paths = conv.save(file=tmp_path / "one.h")
    assert paths == [tmp_path / "one.h"] and (tmp_path / "one.h").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.h"]
    (tmp_path / "client.c").write_text(SINGLE_CLIENT)
    run(["gcc", "-std=c11", *STRICT, "-I", tmp_path, "-o", tmp_path / "single", tmp_path / "client.c"])
    folder = tmp_path / "folder"
    conv.save(file=folder)
    (folder / "client.c").write_text(SINGLE_CLIENT.replace('#include "one.h"', '#include "one.h"\n')
                                     .replace("#pragma GCC poison float double", ""))
    run(["gcc", "-std=c11", *STRICT, "-I", folder, "-o", folder / "multi", folder / "client.c", folder / "one.c"])
    assert run([tmp_path / "single"]).stdout == run([folder / "multi"]).stdout  # the same model either way
    # C++ files take the declarations only
    (tmp_path / "decl.cpp").write_text('#define ONE_DECLARATIONS_ONLY\n#include "one.h"\n#include <cmath>\n'
                                       "int f() { one_init(); return ONE_NUM_CLASSES + (int)std::floor(0.5); }\n")
    run(["g++", "-std=c++11", "-Wall", "-Wextra", "-Werror", "-c", "-I", tmp_path, "-o", tmp_path / "decl.o",
         tmp_path / "decl.cpp"])


def test_save_refuses_source_paths_and_never_makes_a_folder_named_like_a_header(tmp_path):
    conv = convert(Model(preset("mlp1")), name="m")
    for bad in ("model.c", "model.hpp", "model.cpp"):
        with pytest.raises(CodegenError, match="a .h path for one header holding everything"):
            conv.save(file=tmp_path / bad)
    (tmp_path / "taken.h").mkdir()
    with pytest.raises(CodegenError, match="is a folder"):
        conv.save(file=tmp_path / "taken.h")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CodegenError, match="not a folder"):
        conv.save(file=tmp_path / "file")
    with pytest.raises(CodegenError, match="C identifier"):
        conv.save(name="no-good", file=tmp_path / "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "taken.h"]
    assert not any((tmp_path / "taken.h").iterdir())


MAKEFILE = """include gen/capi.mk
app: main.c $(CAPI_SRCS) $(CAPI_HEADERS)
\t$(CC) $(CAPI_CFLAGS) -Wall -Wextra -Werror -o $@ main.c $(CAPI_SRCS)
"""


def test_the_generated_cmake_target_and_makefile_fragment_build(generated, tmp_path):
    d, _, _ = generated
    run(["cmake", "-S", d / "gen", "-B", tmp_path / "b"])
    run(["cmake", "--build", tmp_path / "b"])
    assert (tmp_path / "b" / "libcapi.a").is_file()
    shutil.copytree(d / "gen", tmp_path / "gen")
    (tmp_path / "main.c").write_text('#include "capi.h"\nint main(void) { int8_t x[CAPI_INPUT_SIZE] = {0}; '
                                     "capi_init(); return capi_predict(x, NULL) < 0; }\n")
    (tmp_path / "Makefile").write_text(MAKEFILE)
    run(["make", "-s"], cwd=tmp_path)
    run([tmp_path / "app"])
