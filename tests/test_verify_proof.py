"""verify cannot pass vacuously: it fails (exit status 1) on a device with a broken update rule or one weight
too many or too few, and on a tensor that never moved; it counts movement on the device and writes the whole
verdict as JSON; a 500-step soak stays bit-exact at every checkpoint while lr_inv changes."""
from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
from device_cases import TINY, Synthetic, bundled, pretrained

import nitro_mcu.device.harness as H
import nitro_mcu.device.verify as V
from nitro_mcu import api, cli
from nitro_mcu.fileio import atomic_write
from nitro_mcu.codegen import convert
from nitro_mcu.device.cache import cache_dir
from nitro_mcu.device.harness import run_host_harness
from nitro_mcu.device.protocol import Session
from nitro_mcu.device.targets import FIRMWARE_DIR
from nitro_mcu.spec import preset
from nitro_mcu.trainer.network import Model

N_MCU_CNN = 39064   # weights of mcu_cnn


@pytest.fixture(scope="module")
def trained_file(tmp_path_factory):
    """mcu_cnn (int16) after the host pre-training, as a model file: every tensor moves in verify's 20 steps."""
    path = tmp_path_factory.mktemp("proof") / "mcu_cnn.nitro"
    api.save(pretrained("mcu_cnn", 16), path, data=bundled())
    return path


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    """The small MLP with dropout (quicker to build), pre-trained, as a model file: every tensor moves too."""
    path = tmp_path_factory.mktemp("proof") / "soak_mlp.nitro"
    api.save(pretrained("soak_mlp", 16), path, data=bundled())
    return path


def _verify(capsys, *args):
    rc = cli.main(["verify", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def skip_fc0_forward_update(c: str) -> str:
    """The generated C with the update of fc0.fwd undone: the one statement that takes w_fc0_fwd and lr_inv
    (the fused gradient + update of the block) runs between a save and a restore of w_fc0_fwd."""
    ends = [m.end() for m in re.finditer(r"[;{}]", c)]
    stmts = [(a, b) for a, b in zip([0] + ends, ends) if c[b - 1] == ";" and
             re.search(r"\bw_fc0_fwd\b", c[a:b]) and re.search(r"\blr_inv\b", c[a:b])]
    assert len(stmts) == 1, "the fc0.fwd update statement is no longer recognisable; update this mutation"
    a, b = stmts[0]
    wrapped = (" { memcpy(saved_fc0_fwd, w_fc0_fwd, sizeof w_fc0_fwd); " + c[a:b].strip() +
               " memcpy(w_fc0_fwd, saved_fc0_fwd, sizeof w_fc0_fwd); }")
    c = c[:a] + wrapped + c[b:]
    decl = re.search(r"^static (?:_Alignas\(8\) )?nitro_w_t w_fc0_fwd\[\d+\];$", c, re.M)
    assert decl, "w_fc0_fwd is no longer declared as expected; update this mutation"
    return c[:decl.end()] + "\nstatic nitro_w_t saved_fc0_fwd[sizeof w_fc0_fwd / sizeof w_fc0_fwd[0]];" + \
        c[decl.end():]


@pytest.fixture
def broken_fc_update(monkeypatch):
    def convert_broken(model, **kw):
        conv = convert(model, **kw)
        name = f"{conv.plan.name}.c"
        conv.sources[name] = skip_fc0_forward_update(conv.sources[name])
        return conv
    monkeypatch.setattr(V, "convert", convert_broken)


def _function(c: str, name: str) -> tuple[int, int]:
    """Where the body of harness function ``name`` is: from its signature to the next top-level brace."""
    a = c.index(f"static int {name}(")
    return a, c.index("\n}\n", a) + 3


# Harness mutations: (function, text, replacement) edits, and the first difference verify must report.
MUTANTS = {
    "one weight too many": ([("cmd_weights", "const int32_t n = MU(NUM_WEIGHTS);",
                              "const int32_t n = MU(NUM_WEIGHTS) + 1;"),
                             ("cmd_weights", "    const uint64_t rng = M(get_rng_state)();",
                              '    if (!write_i32(0)) {\n        return fail(ERR_IO, "write");\n    }\n'
                              "    const uint64_t rng = M(get_rng_state)();")],
                            "the device sent {n_plus} weights, the model has {n}"),
    "one weight too few": ([("cmd_weights", "const int32_t n = MU(NUM_WEIGHTS);",
                             "const int32_t n = MU(NUM_WEIGHTS) - 1;"),
                            ("cmd_weights", "        for (int32_t i = 0; i < tt->count; ++i) {\n",
                             "        for (int32_t i = 0; i < tt->count - (t == M(num_tensors)() - 1); ++i) {\n")],
                           "the device sent {n_minus} weights, the model has {n}"),
    "lr_inv off by one": ([("cmd_weights", "!write_i32(M(get_lr_inv)())", "!write_i32(M(get_lr_inv)() + 1)")],
                          "lr_inv: device 513, python 512"),
    "PRNG state off by one bit": ([("cmd_weights", "const uint64_t rng = M(get_rng_state)();",
                                    "const uint64_t rng = M(get_rng_state)() ^ 1u;")],
                                  "dropout PRNG state: device 0x"),
    "a correct count off by one": ([("cmd_train", "!write_i32(correct)", "!write_i32(correct + (b == 8))")],
                                   "training-mode correct count of step 0: device"),
    "moved weights miscounted": ([("cmd_move", "if (!write_i32(changed))", "if (!write_i32(changed / 2))")],
                                 "tensor block0.fwd: {moved_half} weights moved on the device, {moved} in Python"),
}


def harness_mutant(monkeypatch, edits):
    """The harness firmware with ``edits`` applied, written to a folder of the build cache named by its text (so
    that its builds are cached like the real harness's), and used for the next harness builds."""
    c = (FIRMWARE_DIR / "harness.c").read_text()
    for func, old, new in edits:
        a, b = _function(c, func)
        assert c[a:b].count(old) == 1, f"{func} no longer contains {old!r}: update this mutation"
        c = c[:a] + c[a:b].replace(old, new) + c[b:]
    text = c.encode()
    folder = cache_dir() / f"mutant_harness_{hashlib.sha256(text).hexdigest()[:16]}"
    atomic_write(folder / "harness.c", text)
    monkeypatch.setattr(H, "FIRMWARE_DIR", folder)


def test_an_honest_device_passes_and_the_whole_verdict_is_written_as_json(trained_file, capsys, tmp_path):
    rc, out, _ = _verify(capsys, trained_file, "--json", tmp_path / "v.json")
    assert rc == 0, out
    assert out.rstrip().endswith("bit-exact") and "DID NOT MOVE" not in out
    v = json.loads((tmp_path / "v.json").read_text())
    assert v["verdict"] == "bit-exact" and v["problem"] is None and v["steps"] == 20 and v["still"] == []
    assert [t["name"] for t in v["tensors"]] == list(pretrained("mcu_cnn", 16).weights)
    for t in v["tensors"]:
        assert t["mismatches"] == 0 and 0 < t["changed"] == t["changed_device"] <= t["count"], t
    assert v["weights"] == {"device": N_MCU_CNN, "python": N_MCU_CNN}
    assert v["lr_inv"] == {"device": 512, "python": 512}
    assert v["correct"]["device"] == v["correct"]["python"] and len(v["correct"]["python"]) == 20
    assert v["prng_state"]["device"] == v["prng_state"]["python"]
    assert v["held_out_accuracy_bp"] >= 7000 and v["scores_equal"] and v["classes_equal"]


def test_a_device_that_skips_the_fc_forward_update_fails(trained_file, broken_fc_update, capsys):
    rc, out, _ = _verify(capsys, trained_file)
    assert rc == 1
    assert "MISMATCH: first difference at tensor fc0.fwd index [" in out


def test_the_same_broken_device_would_pass_a_vacuous_run_but_movement_fails_it(bundled_data, broken_fc_update):
    """From a fresh mcu_cnn, 20 steps leave fc0.fwd still in Python too: the weights agree, movement does not."""
    rep = V.verify(Model(preset("mcu_cnn"), "default", 16, seed=11), bundled_data, "m4", steps=20,
                   batch=8, predictions=0, name="vac", lr_inv=None)     # the model's own lr_inv: no auto choice
    assert rep.bit_exact and not rep.passed and rep.still == ["fc0.fwd"] and rep.verdict == "STILL"
    assert rep.problem().startswith("STILL: fc0.fwd did not change in 20 training steps")


def test_the_small_model_passes_with_the_real_harness(small_file, capsys):
    rc, out, _ = _verify(capsys, small_file)
    assert rc == 0 and out.rstrip().endswith("bit-exact"), out


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_a_device_that_gets_one_field_wrong_fails(small_file, capsys, monkeypatch, mutant):
    edits, message = MUTANTS[mutant]
    harness_mutant(monkeypatch, edits)
    rc, out, _ = _verify(capsys, small_file)
    n = sum(w.size for w in pretrained("soak_mlp", 16).weights.values())
    moved = int(re.search(r"^block0\.fwd +trainable +\d+ +(\d+) ", out, re.M).group(1))    # the table's 'changed' column
    assert rc == 1, out
    expected = message.format(n=n, n_plus=n + 1, n_minus=n - 1, moved=moved, moved_half=moved // 2)
    assert f"MISMATCH: first difference at {expected}" in out, out


def test_a_still_tensor_fails_unless_allowed(capsys):
    rc, out, _ = _verify(capsys, "mcu_cnn", "--weights", "int16", "--predictions", "0", "--lr-inv", "512")
    assert rc == 1 and "fc0.fwd" in out and "DID NOT MOVE" in out and "--allow-still fc0.fwd" in out
    assert "proof run: lr_inv 512 (given)" in out
    hint = re.search(r"STILL: .*\((.*)\)$", out.rstrip(), re.M).group(1)
    options = set(re.findall(r"--[a-z-]+", hint))
    assert options == {"--steps", "--lr-inv", "--allow-still"}, hint
    parser = cli.build_parser()
    for cmd in ("verify", "run"):    # every option the hint names exists on both commands
        known = {o for act in parser._subparsers._group_actions[0].choices[cmd]._actions for o in act.option_strings}
        assert options <= known, (cmd, options - known)
    # auto: the model's own lr_inv, since the allowed tensor is the only one it leaves still
    rc, out, _ = _verify(capsys, "mcu_cnn", "--weights", "int16", "--predictions", "0", "--allow-still", "fc0.fwd")
    assert rc == 0 and "still (allowed)" in out and out.rstrip().endswith("bit-exact")
    assert "proof run: lr_inv 512 (the model's)" in out
    rc, _, err = _verify(capsys, "mcu_cnn", "--allow-still", "fc9.fwd")
    assert rc == 2 and "fc9.fwd" in err and len(err.strip().splitlines()) == 1


def test_the_auto_lr_inv_is_chosen_in_python_and_moves_every_tensor_there(bundled_data):
    """choose_lr_inv on a fresh mcu_cnn: the model's 512 leaves fc0.fwd still in a Python simulation, the
    chosen lr_inv is the largest 512/2^k that moves every tensor (checked here by training copies directly)."""
    model = Model(preset("mcu_cnn"), "default", 16, seed=11)
    before = {k: v.copy() for k, v in model.weights.items()}

    def still(lr):
        m = Model(preset("mcu_cnn"), "default", 16, seed=11)
        for x, y in V.batches(bundled_data, 20, 8):
            m.train_step(x, y, lr)
        return [k for k in m.weights if np.array_equal(m.weights[k], before[k])]

    c = V.choose_lr_inv(model, bundled_data, 20, 8)
    assert all(np.array_equal(model.weights[k], before[k]) for k in before)   # the model itself is untouched
    assert still(512) == ["fc0.fwd"] and c.still_at_model == ("fc0.fwd",)
    assert c.how == "smaller" and c.model_lr_inv == 512 and still(c.lr_inv) == [] and still(2 * c.lr_inv) != []
    assert "fc0.fwd would not move in 20 steps" in c.describe(20)
    assert V.choose_lr_inv(model, bundled_data, 20, 8, allow_still=["fc0.fwd"]).lr_inv == 512
    assert V.choose_lr_inv(model, bundled_data, 20, 8, lr_inv=64).how == "given"
    assert V.choose_lr_inv(model, bundled_data, 20, 8, lr_inv=None).lr_inv == 512
    with pytest.raises(ValueError, match="lr_inv must be a positive integer or 'auto'"):
        V.choose_lr_inv(model, bundled_data, 20, 8, lr_inv=0)


def test_verify_refuses_an_lr_inv_that_is_not_a_positive_integer_or_auto(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["verify", "mlp1", "--lr-inv", "fast"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--lr-inv: expected auto or an integer" in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def bundled_data():
    return bundled()


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_the_device_counts_moved_weights_under_the_sanitizers(cc):
    """MOVE on the host harness (UBSan + ASan): against the start, after training, with a reference one chunk
    and a bit shorter (missing values count as moved) and longer (read to the end: the next command still works)."""
    model = Model(TINY, "default", 16, seed=3)
    data = Synthetic((64,))
    conv = convert(model, batch=4, train=True, name="mv")
    start = V.flat_weights(model.weights, conv)
    s = Session(64)
    s.move(start)
    for i in range(3):
        x, y = data.x_train[i * 4:(i + 1) * 4], data.y_train[i * 4:(i + 1) * 4]
        s.train(x, y)
        model.train_step(x, y, 512)
    s.move(start)
    s.move(start[:-300])
    s.move(np.concatenate([start, np.arange(700)]))
    s.weights()
    res = run_host_harness(conv, s, cc=cc, sanitize=True)
    now = V.flat_weights(model.weights, conv)

    def expected(ref):   # per tensor: values that differ from ref, plus values ref lacks
        out, o = [], 0
        for t in conv.plan.tensors:
            r = ref[o:o + t.count]
            out.append(int(np.count_nonzero(now[o:o + len(r)] != r)) + t.count - len(r))
            o += t.count
        return out
    moves = [r for r in res if isinstance(r, list)]
    assert moves[0] == [0] * len(conv.plan.tensors)
    assert moves[1] == moves[3] == expected(start) and min(moves[1]) > 0
    assert moves[2] == expected(start[:-300]) != moves[1]
    weights, _, _ = res[-1]
    for k, w in model.weights.items():
        np.testing.assert_array_equal(weights[k], w, err_msg=k)


def test_a_500_step_soak_stays_bit_exact_at_every_checkpoint(bundled_data):
    """One continuous device run (M4, int16, a pre-trained MLP with dropout) with the whole state compared every
    100 steps and lr_inv changed three times (a LRIV command each); the CI-sized version of benchmarks/soak.py."""
    model = pretrained("soak_mlp", 16, seed=7)
    sched = {0: 256, 200: 768, 400: 2304}
    rep = V.verify(model, bundled_data, "m4", steps=500, batch=8, predictions=100, lr_schedule=sched,
                   checkpoint_every=100, name="soak")
    assert rep.passed, rep.problem()
    assert [c.step for c in rep.checkpoints] == [100, 200, 300, 400, 500]
    assert [c.lr_inv_device for c in rep.checkpoints] == [256, 256, 768, 768, 2304]
    assert all(c.equal for c in rep.checkpoints) and len(rep.correct_device) == 500
    assert len({c.rng_device for c in rep.checkpoints}) == 5               # dropout kept drawing
    assert all(0 < t.changed == t.changed_device for t in rep.tensors)
    assert rep.device_accuracy_bp >= 7000, rep.device_accuracy_bp
