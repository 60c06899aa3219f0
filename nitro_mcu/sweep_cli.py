"""The ``sweep`` subcommand of ``nitro-mcu`` (registered by cli.build_parser): models x seeds as Ray tasks."""
from __future__ import annotations

from pathlib import Path

from .cliargs import Interrupted, int_in, positive, weights_bits
from .spec import DEFAULT_BATCH
from .sweep import TEST_READS
from .trainer.profiles import PROFILES
from .trainer.recipes import RECIPE_CHOICES


def cmd_sweep(a) -> int:
    from . import api, fileio, sweep

    models = [m.strip() for m in a.models.split(",") if m.strip()]
    if not models:
        raise ValueError("name at least one model to sweep")
    for m in models:
        api.resolve_spec(m)  # a typo fails here, not in every task
    configs = [sweep.RunConfig(model=m, seed=s, epochs=a.epochs, dataset=a.data, data_dir=a.data_dir, batch=a.batch,
                               profile=a.profile, weights=a.weights, monitor=a.monitor, refit=a.refit,
                               recipe=a.recipe, test_reads=a.test_reads)
               for m in models for s in range(a.seed_base, a.seed_base + a.seeds)]
    out = Path(a.out)
    sweep.check(configs, out)  # models, data and the output folder, before the first task: bad input writes nothing
    length = "the recipe's length" if a.epochs is None else f"at most {a.epochs} epoch(s)"
    print(f"sweep: {', '.join(models)} x seeds {a.seed_base}..{a.seed_base + a.seeds - 1}, recipe {a.recipe}, "
          f"{length} each -> {out}", flush=True)
    try:
        with fileio.folder_lock(out):
            res = sweep.run_sweep(configs, out, address=a.address, num_cpus=a.num_cpus, serial=a.serial)
    except KeyboardInterrupt:
        raise Interrupted(f"nitro-mcu: interrupted; the finished runs are kept in {out / 'runs'}; run the same "
                          "command again to go on") from None
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
    s.add_argument("--epochs", type=int_in(1, 10**6), default=None,
                   help="cap on the epochs per run (default: the recipe's length)")
    s.add_argument("--recipe", choices=list(RECIPE_CHOICES), default="tuned",
                   help="training recipe: each model's own, chosen on validation only (tuned; the paper's for a "
                        "model without one and in the reference profile) or the paper's (docs/profiles.md)")
    s.add_argument("--data", help="dataset or your own data (default: each model's, bundled without --data-dir)")
    s.add_argument("--data-dir", help="folder with the standard IDX / CIFAR-10 files")
    s.add_argument("--batch", type=int_in(1, 2**20), default=DEFAULT_BATCH, help="training batch size")
    s.add_argument("--profile", choices=list(PROFILES), default="default", help="quirk profile")
    s.add_argument("--weights", type=weights_bits, default=None, metavar="int16|int32",
                   help="weight width (default: each model's)")
    s.add_argument("--monitor", choices=["val", "test"], default=None,
                   help="set that drives the schedule (default: the profile's; val unless Q10)")
    s.add_argument("--refit", dest="refit", action="store_true", default=None,
                   help="retrain each run on train + validation for its best epoch count (default: as the recipe, "
                        "where a validation split drives the run)")
    s.add_argument("--no-refit", dest="refit", action="store_false", help="no refit")
    s.add_argument("--test-reads", choices=list(TEST_READS), default="once",
                   help="once (default): the test set is read once per run, for the final model (the refit's); "
                        "epoch: after every epoch too (logged only)")
    s.add_argument("--out", default="out/sweep", help="output folder: runs/, sweep.csv, sweep.md")
    s.add_argument("--address", help="join this Ray cluster (e.g. ray://head:10001 or auto) instead of a local Ray")
    s.add_argument("--num-cpus", type=positive, default=None, help="CPUs of the local Ray (default: all)")
    s.add_argument("--serial", action="store_true", help="no Ray: run one after another in this process")
    s.set_defaults(func=cmd_sweep)
