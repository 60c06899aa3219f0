"""The checkpoint subcommands of ``nitro-mcu`` (registered by cli.build_parser): ``powerloss``,
``import-checkpoint`` and ``export-checkpoint`` (docs/checkpoint.md)."""
from __future__ import annotations

import copy
from pathlib import Path

from . import checkpoint as ck, modelfile
from .cliargs import SPARE_HELP, TRAINABLE_HELP, int_in, load_or_build, spare_classes, weights_bits
from .fileio import atomic_write, check_output_file
from .resume import MEMBER
from .trainer.profiles import PROFILES


MAX_PAGE = 64 << 10  # flash page bytes: the largest page size import-checkpoint tries on a dump (checkpoint.py)
MAX_CUTS = 1024      # cut points on an emulated core: each is one emulator run
page_size = int_in(1, MAX_PAGE)  # the lower bound and the multiple of 4: ck.check_page, with its own message
MAX_SECTOR = 256 << 10  # flash erase unit: STM32F4 sectors are 16-128 KB, STM32F7/H7 up to 256 KB
sector_size = int_in(1, MAX_SECTOR)


def cmd_powerloss(a) -> int:
    from .device.powerloss import sweep_host, sweep_mcu, training_batches
    from .device.flashfw import check_flash_fits, check_flash_target

    sector = ck.check_geometry(a.page_size, a.sector_size)
    if a.target != "host":
        check_flash_target(a.target)
    model, data = a.model_and_data(a)
    if a.target != "host":
        check_flash_fits(model, a.target, a.batch, sector)
    batches = training_batches(data, a.batch)
    where = "the host (simulated NOR flash, every operation, every tear)" if a.target == "host" else \
        f"the emulated {a.target} (flash in a host file, {a.cuts} instruction counts)"
    print(f"power-loss sweep of {a.model} (int{model.weight_bits}) on {where}", flush=True)
    if a.target == "host":
        rep = sweep_host(model, batches, a.page_size, name=a.name, sector_size=sector)
    else:
        rep = sweep_mcu(model, batches, a.target, a.page_size, a.cuts, name=a.name, sector_size=sector)
    print(rep.text())
    return 0 if rep.ok else 1


def _base(a):
    """The model a checkpoint belongs to, and its model-file metadata (empty for a preset or JSON)."""
    model, _ = load_or_build(a.model, a.profile, a.weights, trainable=a.trainable)
    if a.spare_classes:
        from .trainer.classes import with_spare_classes

        model = with_spare_classes(model, a.spare_classes)
    meta = modelfile.load(a.model)[1] if Path(a.model).suffix == ".nitro" else {}
    return model, meta


def cmd_import(a) -> int:
    check_output_file(a.out, "--out")
    path = Path(a.checkpoint)
    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint file")
    model, meta = _base(a)
    sector = a.sector_size or a.page_size
    longest = max(ck.size(model), ck.region_bytes(model, sector or MAX_SECTOR))
    have = path.stat().st_size
    if have > longest:  # before reading it: a checkpoint or flash dump of this model is at most that long
        raise ValueError(f"{path}: {have} bytes, longer than a checkpoint of this model ({ck.size(model)} bytes) "
                         f"or its flash region ({longest} bytes at most)")
    c = ck.from_bytes(path.read_bytes(), model, sector)
    out = copy.deepcopy(model)
    ck.apply(out, c)
    blob = ck.encode(out, c.step, c.lr_inv)
    training = dict(meta.get("training") or {}, imported_checkpoint=str(path), step=c.step, final_lr_inv=c.lr_inv)
    training.pop("resume", None)
    modelfile.save(out, a.out, norm=meta.get("norm"), training=training, files={MEMBER: blob})
    print(f"{path}: checkpoint of step {c.step} (lr_inv {c.lr_inv}, sequence {c.seq}) -> wrote {a.out}")
    return 0


def cmd_export(a) -> int:
    check_output_file(a.out, "--out")
    sector = ck.check_geometry(a.page_size, a.sector_size) if a.flash_image else None
    model, meta = _base(a)
    files = modelfile.load_files(a.model)[2] if meta else {}
    training = meta.get("training") or {}
    if MEMBER in files and not training.get("resume"):
        blob = files[MEMBER]             # an imported device checkpoint: step and lr_inv as they were
        if ck.version_of(blob) != ck.VERSION or \
                blob[ck.OFFSETS["fingerprint"]:][:8] != ck.fingerprint(model).to_bytes(8, "little"):
            # imported by an older nitro-mcu, or for another build (--trainable, --spare-classes): the same state
            # (the file's weights, PRNG, classes) in this version, for this build
            blob = ck.encode(model, training.get("step", 0), training.get("final_lr_inv") or model.spec["lr_inv"])
    else:
        lr = training.get("final_lr_inv") or model.spec["lr_inv"]
        blob = ck.encode(model, 0, lr)
    if a.flash_image:
        blob = ck.flash_image(model, sector, [ck.with_seq(blob, 1)])
    atomic_write(Path(a.out), blob)
    what = f"a flash region ({sector}-byte sectors) with it in slot 0" if a.flash_image else "a checkpoint"
    print(f"wrote {a.out}: {what}, {len(blob)} bytes")
    return 0


def register(sub, device_args, model_and_data) -> None:
    """Add the subcommands to ``sub``; ``device_args`` adds the device commands' options, ``model_and_data(args)``
    loads a device command's model and data."""
    p = sub.add_parser("powerloss", help="cut the power at every point of a checkpoint save and check recovery")
    device_args(p, verify_cmd=False, extra_targets=("host",))  # --target host: the simulated flash
    p.add_argument("--page-size", type=page_size, default=256, help="flash page bytes (program unit)")
    p.add_argument("--sector-size", type=sector_size, default=None,
                   help="flash sector bytes (erase unit, a multiple of the page; default: the page size)")
    p.add_argument("--cuts", type=int_in(1, MAX_CUTS), default=64, help="instruction counts cut at on an emulated core")
    p.set_defaults(func=cmd_powerloss, model_and_data=model_and_data)

    for verb, fn, what in (("import-checkpoint", cmd_import, "make a .nitro file from a device checkpoint or flash dump"),
                           ("export-checkpoint", cmd_export, "write a model's checkpoint (or flash image) for a device")):
        q = sub.add_parser(verb, help=what)
        if verb == "import-checkpoint":
            q.add_argument("checkpoint", help="checkpoint file, or a dump of the device's flash region")
            q.add_argument("--model", required=True, help="the model it belongs to: .nitro file, preset or JSON")
            q.add_argument("--page-size", type=page_size, default=None,
                           help="erase unit of a flash dump when it erases pages (default: found)")
        else:
            q.add_argument("model", help=".nitro file (or preset / JSON: its initial weights)")
            q.add_argument("--flash-image", action="store_true", help="a whole flash region, checkpoint in slot 0")
            q.add_argument("--page-size", type=page_size, default=256, help="flash page bytes (program unit)")
        q.add_argument("--sector-size", type=sector_size, default=None,
                       help="flash sector bytes (erase unit; slots start on sectors; default: the page size"
                            + (", or found from the dump)" if verb == "import-checkpoint" else ")"))
        q.add_argument("--out", required=True, help="file to write")
        q.add_argument("--weights", type=weights_bits, default=None, metavar="int16|int32", help="weight width (default: the model file's)")
        q.add_argument("--profile", choices=list(PROFILES), default="default", help="for presets / JSON models")
        q.add_argument("--trainable", metavar="BLOCKS", help=TRAINABLE_HELP + "; as the device build was generated "
                       "(its checkpoint carries the trainable blocks only)")
        q.add_argument("--spare-classes", type=spare_classes, default=0, metavar="N",
                       help=SPARE_HELP + "; as the device build was generated (default: 0)")
        q.set_defaults(func=fn)
