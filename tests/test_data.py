"""Tests of nitro_mcu.trainer.data: loaders, integer normalisation (golden), prepare, batching, augmentation."""
from __future__ import annotations

import gzip
import json
import pickle
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from nitro_mcu.trainer import data as D
from nitro_mcu.trainer.data import DataError
from nitro_mcu.trainer.arith import tdiv
from nitro_mcu.trainer.rng import GAMMA, STREAM_DATA, Rng
from paths import DATASETS, GOLDEN, dataset_dir, needs_dataset

REPO = Path(__file__).resolve().parents[1]
needs_mnist = needs_dataset("mnist")
needs_fmnist = needs_dataset("fashion-mnist")

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ------------------------------------------------------------------------------------------------ helpers
def idx_bytes(a: np.ndarray, code: int = 0x08) -> bytes:
    return bytes([0, 0, code, a.ndim]) + b"".join(struct.pack(">I", d) for d in a.shape) + a.tobytes()


def write_idx_dir(d: Path, x_train, y_train, x_test, y_test, gz: bool = True):
    d.mkdir(parents=True, exist_ok=True)
    for stem, a in (("train-images-idx3-ubyte", x_train), ("train-labels-idx1-ubyte", y_train),
                    ("t10k-images-idx3-ubyte", x_test), ("t10k-labels-idx1-ubyte", y_test)):
        raw = idx_bytes(np.asarray(a, dtype=np.uint8))
        (d / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(raw) if gz else raw)
    return d


def tiny_idx(n_train=20, n_test=10, seed=0):
    r = Rng(seed, 9)
    return (r.randint(0, 255, (n_train, 6, 5)).astype(np.uint8), (np.arange(n_train) % 10).astype(np.uint8),
            r.randint(0, 255, (n_test, 6, 5)).astype(np.uint8), (np.arange(n_test) % 10).astype(np.uint8))


# ------------------------------------------------------------------------------------------------ IDX
@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    a = Rng(1, 9).randint(0, 255, (7, 4, 3)).astype(np.uint8)
    raw = idx_bytes(a)
    p = tmp_path / ("a.idx" + (".gz" if gz else ""))
    p.write_bytes(gzip.compress(raw) if gz else raw)
    b = D.load_idx(p)
    assert b.dtype == np.uint8 and b.shape == (7, 4, 3)
    assert np.array_equal(a, b)
    lab = np.arange(10, dtype=np.uint8)
    (tmp_path / "l").write_bytes(idx_bytes(lab))
    assert np.array_equal(D.load_idx(tmp_path / "l"), lab)


def test_idx_errors(tmp_path):
    with pytest.raises(DataError, match="not found") as e:
        D.load_idx(tmp_path / "nope.gz")
    assert "nope.gz" in str(e.value)

    a = np.zeros((3, 2, 2), dtype=np.uint8)
    good = idx_bytes(a)
    (tmp_path / "trunc").write_bytes(good[:-1])
    with pytest.raises(DataError, match="truncated") as e:
        D.load_idx(tmp_path / "trunc")
    assert "trunc" in str(e.value)
    (tmp_path / "trunch").write_bytes(good[:6])
    with pytest.raises(DataError, match="truncated IDX header"):
        D.load_idx(tmp_path / "trunch")
    (tmp_path / "trunc.gz").write_bytes(gzip.compress(good)[:-10])
    with pytest.raises(DataError, match="gzip|truncated"):
        D.load_idx(tmp_path / "trunc.gz")

    (tmp_path / "magic").write_bytes(b"\x01\x02" + good[2:])
    with pytest.raises(DataError, match="bad IDX magic") as e:
        D.load_idx(tmp_path / "magic")
    assert "magic" in str(e.value) and "\n" not in str(e.value)

    (tmp_path / "dtype").write_bytes(idx_bytes(a, code=0x0D))
    with pytest.raises(DataError, match="dtype code 0x0d"):
        D.load_idx(tmp_path / "dtype")

    (tmp_path / "extra").write_bytes(good + b"\0")
    with pytest.raises(DataError, match="trailing"):
        D.load_idx(tmp_path / "extra")


def test_idx_directory_dataset(tmp_path):
    xtr, ytr, xte, yte = tiny_idx()
    d = write_idx_dir(tmp_path / "mnist", xtr, ytr, xte, yte, gz=False)
    ds = D.load_dataset("mnist", d)
    assert ds.x_train.shape == (20, 1, 6, 5) and ds.y_train.dtype == np.int64
    assert np.array_equal(ds.x_train[:, 0], xtr) and np.array_equal(ds.y_test, yte)
    # parent directory with a mnist/ subfolder, and the directory given as the name
    assert np.array_equal(D.load_dataset("mnist", tmp_path).x_test[:, 0], xte)
    ds2 = D.load_dataset(str(d))
    assert ds2.name == "mnist" and ds2.num_classes == 10
    # missing file
    (d / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="missing IDX file t10k-labels"):
        D.load_dataset("mnist", d)


def test_labels_out_of_range_rejected(tmp_path):
    xtr, ytr, xte, yte = tiny_idx()
    ytr = ytr.copy()
    ytr[3] = 10
    d = write_idx_dir(tmp_path / "m", xtr, ytr, xte, yte)
    with pytest.raises(DataError, match=r"train label 10 outside \[0, 10\)"):
        D.load_dataset("mnist", d)
    ds = D.Dataset("t", xtr[:, None], np.arange(20) % 10, xte[:, None], np.arange(10) % 10 - 1, 10)
    with pytest.raises(DataError, match="test label -1"):
        ds.validate()


def test_dataset_validation_errors(tmp_path):
    xtr, ytr, xte, yte = tiny_idx()
    ok = dict(name="t", x_train=xtr[:, None], y_train=ytr.astype(np.int64), x_test=xte[:, None],
              y_test=yte.astype(np.int64), num_classes=10)
    D.Dataset(**ok).validate()
    for change, msg in ((dict(x_train=xtr[:, None].astype(np.float32)), "uint8"),
                        (dict(x_train=xtr), "4-D"),
                        (dict(y_train=ytr[:-1].astype(np.int64)), "20 train images but 19"),
                        (dict(x_test=np.zeros((10, 1, 5, 6), np.uint8)), "differ in shape"),
                        (dict(num_classes=1), "num_classes")):
        with pytest.raises(DataError, match=msg):
            D.Dataset(**{**ok, **change}).validate()
    # count mismatch between IDX files
    d = write_idx_dir(tmp_path / "m", xtr, ytr[:15], xte, yte)
    with pytest.raises(DataError, match="20 train images but 15 train labels"):
        D.load_dataset("mnist", d)


def test_unknown_and_missing_dir():
    with pytest.raises(DataError, match="unknown dataset 'imagenet'.*mnist, fashion-mnist, cifar10, bundled"):
        D.load_dataset("imagenet")
    with pytest.raises(DataError, match="--data-dir"):
        D.load_dataset("mnist")
    with pytest.raises(DataError, match="--data-dir"):
        D.load_dataset("fmnist")
    with pytest.raises(DataError, match="not found"):
        D.load_dataset("mnist", "/nonexistent/dir")


# ------------------------------------------------------------------------------------------------ CIFAR
def write_cifar(d: Path, n: int = 4, meta: bool = True):
    d.mkdir(parents=True, exist_ok=True)
    r = Rng(5, 9)
    batches = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        x = r.randint(0, 255, (n, 3072)).astype(np.uint8)
        y = [(i + j) % 10 for j in range(n)]
        batches[name] = (x, y)
        with open(d / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": y, b"data": x,
                         b"filenames": [b"f%d" % j for j in range(n)]}, f, protocol=2)
    if meta:
        with open(d / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": [c.encode() for c in D.CIFAR10_CLASSES], b"num_vis": 3072}, f, protocol=2)
    return batches


def test_cifar_loader(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    b = write_cifar(d)
    ds = D.load_cifar10(d)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    x0 = b["data_batch_1"][0][1]
    assert np.array_equal(ds.x_train[1, 0].reshape(-1), x0[:1024])  # R plane
    assert np.array_equal(ds.x_train[1, 2, 31], x0[2048 + 31 * 32: 2048 + 32 * 32])  # B plane, last row
    assert ds.y_train[4:8].tolist() == b["data_batch_2"][1]
    assert tuple(ds.classes) == D.CIFAR10_CLASSES and ds.num_classes == 10
    # by name with a parent data_dir, and auto-detected from a directory
    assert np.array_equal(D.load_dataset("cifar10", tmp_path).x_test, ds.x_test)
    assert np.array_equal(D.load_dataset(str(d)).x_train, ds.x_train)


def test_cifar_errors(tmp_path):
    d = tmp_path / "c"
    write_cifar(d)
    (d / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3: file not found"):
        D.load_cifar10(d)
    write_cifar(d)
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"labels": [0, 11], b"data": np.zeros((2, 3072), np.uint8)}, f, protocol=2)
    with pytest.raises(DataError, match="test label 11"):
        D.load_cifar10(d)
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"labels": [0], b"data": np.zeros((2, 3072), np.uint8)}, f, protocol=2)
    with pytest.raises(DataError, match="2 images but 1 labels"):
        D.load_cifar10(d)
    with open(d / "test_batch", "wb") as f:  # arbitrary objects are refused, not executed
        pickle.dump({b"labels": [0], b"data": Path("x")}, f, protocol=2)
    with pytest.raises(DataError, match="cannot unpickle"):
        D.load_cifar10(d)


# ------------------------------------------------------------------------------------------------ real MNIST + golden
@pytest.fixture(scope="module")
def mnist():
    return D.load_dataset("mnist", dataset_dir("mnist"))


@needs_mnist
def test_real_mnist_counts(mnist):
    assert mnist.x_train.shape == (60000, 1, 28, 28) and mnist.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(mnist.y_train).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(mnist.y_test).tolist() == MNIST_TEST_COUNTS
    assert mnist.num_classes == 10 and mnist.name == "mnist"


@needs_mnist
def test_mnist_golden_normalisation(mnist):
    meta = json.loads((GOLDEN / "mlp1_mnist_10steps.json").read_text())["data"]["normalization"]
    mu, mad = D.compute_norm_stats(mnist.x_train[:25000])
    assert mu.dtype == np.int64 and mu.tolist() == meta["mu"] == [-94] and mad.tolist() == meta["mad"] == [55]
    t = time.perf_counter()
    xn = D.normalize(mnist.x_train, mu, mad)
    assert time.perf_counter() - t < 1.0
    assert xn.dtype == np.int8 and xn.shape == (60000, 1, 28, 28)
    gold = np.load(GOLDEN / "mlp1_mnist_10steps.npz")["x"]
    assert np.array_equal(xn[:64].reshape(64, 784), gold[0])
    assert np.array_equal(xn[:640].reshape(gold.shape), gold)
    # the reference setting in prepare(): file order, no split
    p = D.prepare(mnist, seed=0, monitor="test", shuffle=False)
    assert p.mu.tolist() == [-94] and p.mad.tolist() == [55]
    assert np.array_equal(p.x_train[:64].reshape(64, 784), gold[0])


@needs_fmnist
def test_fmnist_stats():
    f = D.load_dataset("fashion-mnist", DATASETS)
    assert f.name == "fashion-mnist" and f.classes[9] == "Ankle boot"
    assert np.bincount(f.y_train).tolist() == [6000] * 10 and np.bincount(f.y_test).tolist() == [1000] * 10
    mu, mad = D.compute_norm_stats(f.x_train[:25000])
    assert (mu.tolist(), mad.tolist()) == ([-55], [81])
    gold = np.load(GOLDEN / "mlp2_fmnist_10steps.npz")["x"]
    assert np.array_equal(D.normalize(f.x_train[:64], mu, mad).reshape(64, 784), gold[0])


def test_stats_match_elementwise_definition():
    x = Rng(3, 9).randint(0, 255, (9, 3, 5, 4)).astype(np.uint8)
    mu, mad = D.compute_norm_stats(x)
    c = x.astype(np.int64) - 128
    for ch in range(3):
        m = tdiv(int(c[:, ch].sum()), c[:, ch].size)
        assert mu[ch] == m
        assert mad[ch] == tdiv(int(np.abs(c[:, ch] - m).sum()), c[:, ch].size)


def test_normalize_truncates_toward_zero():
    # pixel 100, mu 0, mad 7: (100 - 128) * 51 = -1428; -1428 / 7 = -204 exactly -> clipped; use mad 100:
    # -1428 / 100 = -14.28 -> tdiv -14, floor would give -15.
    x = np.full((1, 1, 1, 2), [[100, 156]], dtype=np.uint8)
    out = D.normalize(x, np.array([0]), np.array([100]))
    assert out.dtype == np.int8
    assert out.reshape(-1).tolist() == [-14, 14]
    assert (-1428) // 100 == -15  # what floor division would have produced
    # every pixel value against the formula, with clipping at both ends
    px = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    out = D.normalize(px, np.array([-3]), np.array([9])).reshape(-1).astype(np.int64)
    want = [max(-128, min(127, tdiv((p - 128 + 3) * 51, 9))) for p in range(256)]
    assert out.tolist() == want and min(want) == -128 and max(want) == 127


def test_normalize_rejects_bad_input():
    with pytest.raises(DataError, match="float"):
        D.normalize(np.zeros((2, 1, 4, 4), np.float32), [0], [1])
    with pytest.raises(DataError, match="float"):
        D.compute_norm_stats(np.zeros((2, 1, 4, 4), np.float64))
    with pytest.raises(DataError, match="4-D"):
        D.normalize(np.zeros((2, 16), np.uint8), [0], [1])
    with pytest.raises(DataError, match="channels"):
        D.normalize(np.zeros((2, 3, 4, 4), np.uint8), [0], [1])
    with pytest.raises(DataError, match="positive"):
        D.normalize(np.zeros((2, 1, 4, 4), np.uint8), [0], [0])
    with pytest.raises(DataError, match="integers"):
        D.normalize(np.zeros((2, 1, 4, 4), np.uint8), [0.5], [1])


# ------------------------------------------------------------------------------------------------ bundled
def test_bundled_dataset():
    path = REPO / "nitro_mcu" / "datasets" / D.BUNDLED_RESOURCE
    assert path.stat().st_size <= 1_500_000
    assert (REPO / "nitro_mcu" / "datasets" / "ATTRIBUTION.md").is_file()
    ds = D.load_dataset("bundled")
    assert ds.x_train.shape == (5000, 1, 28, 28) and ds.x_test.shape == (1000, 1, 28, 28)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64 and ds.num_classes == 10
    assert np.bincount(ds.y_train).tolist() == [500] * 10
    assert np.bincount(ds.y_test).tolist() == [100] * 10
    mu, mad = D.compute_norm_stats(ds.x_train)
    assert -100 < mu[0] < -85 and 45 < mad[0] < 65


@needs_mnist
def test_bundled_matches_mnist_subset(mnist):
    with np.load(REPO / "nitro_mcu" / "datasets" / D.BUNDLED_RESOURCE) as z:
        tr, te = z["train_index"].astype(np.int64), z["test_index"].astype(np.int64)
    ds = D.load_dataset("bundled")
    assert np.array_equal(ds.x_train, mnist.x_train[tr]) and np.array_equal(ds.y_test, mnist.y_test[te])
    # first images of each class in file order
    assert tr.tolist() == sorted(np.concatenate([np.flatnonzero(mnist.y_train == c)[:500] for c in range(10)]).tolist())


# ------------------------------------------------------------------------------------------------ prepare
@pytest.fixture(scope="module")
def small():
    return D.load_dataset("bundled")


def test_prepare_deterministic_and_split(small):
    a = D.prepare(small, seed=42)
    b = D.prepare(small, seed=42)
    c = D.prepare(small, seed=43)
    assert a.x_train.dtype == np.int8 and a.x_val.dtype == np.int8 and a.x_test.dtype == np.int8
    assert a.y_train.dtype == np.int64
    assert a.x_train.shape == (4500, 1, 28, 28) and a.x_val.shape == (500, 1, 28, 28)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_val, b.y_val)
    assert a.rng.state == b.rng.state
    assert not np.array_equal(a.train_index, c.train_index)
    # validation is the LAST val_size of the permutation, disjoint from training, covering everything
    perm = Rng(42, STREAM_DATA).permutation(5000)
    assert np.array_equal(a.val_index, perm[4500:]) and np.array_equal(a.train_index, perm[:4500])
    assert not set(a.train_index.tolist()) & set(a.val_index.tolist())
    assert sorted(a.train_index.tolist() + a.val_index.tolist()) == list(range(5000))
    assert np.array_equal(a.y_val, small.y_train[a.val_index])
    # statistics from the first min(N, stats_images) images of the permuted training part
    mu, mad = D.compute_norm_stats(small.x_train[perm[:4500]])
    assert a.mu.tolist() == mu.tolist() and a.mad.tolist() == mad.tolist()
    s = D.prepare(small, seed=42, stats_images=100)
    mu100, mad100 = D.compute_norm_stats(small.x_train[perm[:100]])
    assert s.mu.tolist() == mu100.tolist() and s.mad.tolist() == mad100.tolist()
    assert np.array_equal(a.x_test, D.normalize(small.x_test, a.mu, a.mad))
    # the Rng continues after the permutation
    r = Rng(42, STREAM_DATA)
    r.permutation(5000)
    assert a.rng.state == r.state
    x, y = a.monitor_set()
    assert x is a.x_val


def test_prepare_monitor_test_and_zero_val(small):
    t = D.prepare(small, seed=1, monitor="test")
    assert t.x_val.shape[0] == 0 and t.x_train.shape[0] == 5000 and t.monitor_set()[0] is t.x_test
    z = D.prepare(small, seed=1, val_size=0)
    assert z.x_val.shape == (0, 1, 28, 28) and np.array_equal(z.x_train, t.x_train)
    with pytest.raises(DataError, match="validation split is empty"):
        z.monitor_set()
    with pytest.raises(DataError, match="val_size"):
        D.prepare(small, seed=1, monitor="test", val_size=10)
    with pytest.raises(DataError, match="val_size"):
        D.prepare(small, seed=1, val_size=5000)
    with pytest.raises(DataError, match="monitor"):
        D.prepare(small, seed=1, monitor="train")


# ------------------------------------------------------------------------------------------------ targets, batches
def test_one_hot():
    t = D.one_hot(np.array([0, 3, 9]), 10)
    assert t.dtype == np.int8 and t.shape == (3, 10)
    assert t.sum(axis=1).tolist() == [32] * 3 and t[1, 3] == 32
    assert D.one_hot(np.array([1]), 2, value=5).tolist() == [[0, 5]]
    with pytest.raises(DataError):
        D.one_hot(np.array([10]), 10)


def test_batches():
    r1, r2 = Rng(7, STREAM_DATA), Rng(7, STREAM_DATA)
    bs = list(D.batches(130, 64, r1))
    perm = r2.permutation(130)
    assert len(bs) == 2 and all(len(b) == 64 for b in bs)
    assert np.array_equal(np.concatenate(bs), perm[:128]) and r1.state == r2.state
    bs = list(D.batches(130, 64, r1, drop_last=False))
    assert [len(b) for b in bs] == [64, 64, 2] and sorted(np.concatenate(bs).tolist()) == list(range(130))
    # the permutation is drawn eagerly, even before iteration
    r3, r4 = Rng(7, STREAM_DATA), Rng(7, STREAM_DATA)
    D.batches(10, 4, r3)
    r4.permutation(10)
    assert r3.state == r4.state
    assert D.num_batches(60000, 64) == 937 and D.num_batches(10000, 64, False) == 157


# ------------------------------------------------------------------------------------------------ augmentation
def ref_augment(x, rng, pad, flip, per_batch):
    """Slow transcription of the documented draw order (one rng.below call per draw)."""
    x = x.astype(np.int64)
    h, w = x.shape[2:]
    groups = [slice(None)] if per_batch else [slice(i, i + 1) for i in range(x.shape[0])]
    out = x.copy()
    for g in groups:
        xs = x[g]
        if pad and int(rng.below(2, 1)[0]) == 1:
            top, left = (int(v) for v in rng.below(2 * pad + 1, 2))
            p = np.full((xs.shape[0], xs.shape[1], h + 2 * pad, w + 2 * pad), xs.min())
            p[:, :, pad:pad + h, pad:pad + w] = xs
            xs = p[:, :, top:top + h, left:left + w]
        if flip and int(rng.below(2, 1)[0]) == 1:
            xs = xs[:, :, :, ::-1]
        out[g] = xs
    return out.astype(np.int8)


@pytest.mark.parametrize("per_batch", [False, True])
@pytest.mark.parametrize("pad,flip", [(2, False), (2, True), (4, True), (0, True)])
def test_augment_matches_documented_draw_order(per_batch, pad, flip):
    x = Rng(11, 9).randint(-128, 127, (16, 3, 8, 8)).astype(np.int8)
    ra, rb = Rng(5, STREAM_DATA), Rng(5, STREAM_DATA)
    for _ in range(6):
        got = D.augment(x, ra, pad, flip, per_batch)
        want = ref_augment(x, rb, pad, flip, per_batch)
        assert got.dtype == np.int8 and np.array_equal(got, want)
        assert ra.state == rb.state


def test_augment_per_batch_shares_one_shift():
    x = np.zeros((8, 1, 6, 6), np.int8)
    x[:, 0, 2, 3] = 100  # one bright pixel per sample, same place
    x[:, 0, 0, 0] = np.arange(8) - 20  # distinct minima
    r = Rng(3, STREAM_DATA)
    seen_shift = False
    for _ in range(20):
        y = D.augment(x, r, crop_pad=2, flip=False, per_batch=True)
        pos = [tuple(np.argwhere(y[i, 0] == 100)[0]) if (y[i, 0] == 100).any() else None for i in range(8)]
        assert len(set(pos)) == 1  # every sample moved identically
        seen_shift |= pos[0] != (2, 3)
        # pad value is the batch minimum (-20) wherever padding shows
        assert y.min() >= -20
    assert seen_shift


def test_augment_per_sample_draw_counts():
    x = Rng(2, 9).randint(-128, 127, (32, 1, 5, 5)).astype(np.int8)
    # per-batch: crop draw, maybe 2 offsets, flip draw -> 2 or 4 outputs per call
    r = Rng(9, STREAM_DATA)
    s0 = r.state
    D.augment(x, r, 2, True, per_batch=True)
    used = ((r.state - s0) * pow(GAMMA, -1, 2**64)) % 2**64
    assert used in (2, 4)
    # per-sample: between 2 and 4 draws per sample, and both crop outcomes occur
    s0 = r.state
    D.augment(x, r, 2, True, per_batch=False)
    used = ((r.state - s0) * pow(GAMMA, -1, 2**64)) % 2**64
    assert 2 * 32 < used < 4 * 32
    # flip only: exactly one draw per sample; nothing at all when disabled
    s0 = r.state
    D.augment(x, r, 0, True, per_batch=False)
    assert ((r.state - s0) * pow(GAMMA, -1, 2**64)) % 2**64 == 32
    s0 = r.state
    assert np.array_equal(D.augment(x, r, 0, False, per_batch=False), x) and r.state == s0


def test_flip_is_mirror_and_per_sample_pad_is_sample_min():
    x = Rng(4, 9).randint(-100, 100, (64, 2, 4, 5)).astype(np.int8)
    y = D.augment(x, Rng(1, STREAM_DATA), crop_pad=0, flip=True, per_batch=False)
    flipped = [np.array_equal(y[i], x[i, :, :, ::-1]) for i in range(64)]
    kept = [np.array_equal(y[i], x[i]) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept)) and 10 < sum(flipped) < 54
    x = np.zeros((16, 1, 4, 4), np.int8)
    x[:, 0, 1, 1] = -np.arange(16) - 1  # sample minimum -1 .. -16
    y = D.augment(x, Rng(2, STREAM_DATA), crop_pad=3, flip=False, per_batch=False)
    for i in range(16):
        assert y[i].min() >= -(i + 1)  # padding never brings in another sample's (lower) minimum


def test_augment_rejects_bad_input():
    with pytest.raises(DataError, match="int8"):
        D.augment(np.zeros((2, 1, 4, 4), np.float32), Rng(0, 2), 2, True)
    with pytest.raises(DataError, match="crop_pad"):
        D.augment(np.zeros((2, 1, 4, 4), np.int8), Rng(0, 2), -1, True)
    assert D.augment_defaults("fmnist") == (2, True) and D.augment_defaults("cifar10") == (4, True)
    assert D.augment_defaults("mnist") == (2, False)
