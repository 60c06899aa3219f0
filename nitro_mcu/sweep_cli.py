"""The ``sweep`` subcommand of ``nitro-mcu`` (registered by cli.build_parser): models x seeds as Ray tasks."""
from __future__ import annotations

from pathlib import Path

from .cliargs import int_in, positive, weights_bits
from .spec import DEFAULT_BATCH, DEFAULT_EPOCHS
from .trainer.profiles import PROFILES


def cmd_sweep(a) -> int:
    from . import api, sweep

    models = [m.strip() for m in a.models.split(",") if m.strip()]
    if not models:
        raise ValueError("name at least one model to sweep")
    for m in models:
        api.resolve_spec(m)  # a typo fails here, not in every task
    configs = [sweep.RunConfig(model=m, seed=s, epochs=a.epochs, dataset=a.data, data_dir=a.data_dir, batch=a.batch,
                               profile=a.profile, weights=a.weights, monitor=a.monitor, refit=a.refit)
               for m in models for s in range(a.seed_base, a.seed_base + a.seeds)]
    out = Path(a.out)
    print(f"sweep: {', '.join(models)} x seeds {a.seed_base}..{a.seed_base + a.seeds - 1}, {a.epochs} epoch(s) "
          f"each -> {out}", flush=True)
    try:
        res = sweep.run_sweep(configs, out, address=a.address, num_cpus=a.num_cpus, serial=a.serial)
    except KeyboardInterrupt:
        print(f"interrupted: the finished runs are kept in {out / 'runs'}; run the same command again to go on")
        raise
    print()
    print(sweep.table(res.records))
    print(f"wrote {out / 'sweep.csv'} (one row per run) and {out / 'sweep.md'}")
    if res.failures:
        print(f"{len(res.failures)} run(s) failed (see above); run the same command again to re-run only those")
        return 1
    return 0


def register(sub) -> None:
    s = sub.add_parser("sweep", help="train models x seeds as Ray tasks; one table of mean ± σ (docs/sweeps.md)")
    s.add_argument("models", help="comma-separated presets or model description .json files")
    s.add_argument("--seeds", type=int_in(1, 10**4), default=3, help="seeds per model")
    s.add_argument("--seed-base", type=int_in(0, 2**63), default=0, help="first seed")
    s.add_argument("--epochs", type=int_in(1, 10**6), default=DEFAULT_EPOCHS, help="most epochs per run")
    s.add_argument("--data", help="dataset or your own data (default: each model's, bundled without --data-dir)")
    s.add_argument("--data-dir", help="folder with the standard IDX / CIFAR-10 files")
    s.add_argument("--batch", type=int_in(1, 2**20), default=DEFAULT_BATCH, help="training batch size")
    s.add_argument("--profile", choices=list(PROFILES), default="default", help="quirk profile")
    s.add_argument("--weights", type=weights_bits, default=None, metavar="int16|int32",
                   help="weight width (default: each model's)")
    s.add_argument("--monitor", choices=["val", "test"], default=None,
                   help="set that drives the schedule (default: the profile's; val unless Q10)")
    s.add_argument("--refit", action="store_true", help="also retrain each run on train + validation")
    s.add_argument("--out", default="out/sweep", help="output folder: runs/, sweep.csv, sweep.md")
    s.add_argument("--address", help="join this Ray cluster (e.g. ray://head:10001 or auto) instead of a local Ray")
    s.add_argument("--num-cpus", type=positive, default=None, help="CPUs of the local Ray (default: all)")
    s.add_argument("--serial", action="store_true", help="no Ray: run one after another in this process")
    s.set_defaults(func=cmd_sweep)
