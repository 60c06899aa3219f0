"""Training curves of a History as a PNG: accuracy per epoch (train, monitor, test), chance, integer loss."""
from __future__ import annotations

from pathlib import Path


def plot_curves(hist, path: Path, chance_bp: int = 0) -> Path | None:
    """Write the curves PNG atomically and return its path; None without matplotlib (an optional extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return None
    import io

    from ..fileio import atomic_write

    ep = [r.epoch for r in hist.records]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ep, [r.train_acc_bp / 100 for r in hist.records], "o-", label="train (training mode)")
    if hist.monitor in ("val", "test"):
        ax.plot(ep, [r.monitor_acc_bp / 100 for r in hist.records], "s-", label=hist.monitor)
    if hist.monitor != "test":
        ax.plot(ep, [r.test_acc_bp / 100 for r in hist.records], "^-", label="test")
    if chance_bp:
        ax.axhline(chance_bp / 100, color="grey", ls=":", lw=1, label="chance")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_xlim(0.5, max(ep, default=1) + 0.5)  # one epoch is a readable point, not an empty axis
    ax.set_ylim(0, 100)
    if len(ep) <= 20:
        ax.set_xticks(ep)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    loss = ax.twinx()  # the integer training loss: sum of squared int8 errors per sample
    loss.plot(ep, [r.train_loss for r in hist.records], "d--", color="tab:red", alpha=0.7, label="train loss")
    loss.set_ylabel("train loss (integer, per sample)")
    loss.set_ylim(bottom=0)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = loss.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="center right")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buf.getvalue())
    return path
