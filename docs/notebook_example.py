"""netemu results in a notebook (or a script): a run directory's tables as pandas DataFrames.

Reproduces two of the report's figures from a run directory: measured RTT against the plan's
light-time (oracle) for one probed pair, and the workloads' job completion-time CDF.

    python docs/notebook_example.py out/run        # writes out/run/notebook-*.png

In Jupyter, paste the cells below; `run` and `plan` show a short HTML summary of themselves.
The report's own figures are functions too, returning the matplotlib Figure (saving is yours):

    from netemu.report import fig_map, fig_rtt
    fig = fig_rtt(run)            # or fig_rtt("out/run"); None when the run probed nothing
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import netemu  # noqa: E402


def rtt_figure(run, src=None, dst=None):
    """Measured RTT (dots) against the oracle light-time of the planned path (line), one pair."""
    pr = run.probes
    if src is None:
        src, dst = pr[["src", "dst"]].iloc[0]
    g = pr[(pr["src"] == src) & (pr["dst"] == dst)]
    fig, ax = plt.subplots(figsize=(10, 3))
    ax.plot(g["t_s"], g["oracle_rtt_ms"], color="#1d232b", lw=1.2, label="light-time of the path (oracle)")
    ax.scatter(g["t_s"], g["rtt_ms"], s=4, color="#d1495b", label="measured RTT", zorder=3)
    ev = run.events
    if ev is not None:        # the plan's path changes of this pair, inside the probed window
        ch = ev[(ev["event"] == "path_change") & (ev["a"] == src) & (ev["b"] == dst)
                & ev["t_s"].between(g["t_s"].min(), g["t_s"].max())]
        for i, t in enumerate(ch["t_s"]):
            ax.axvline(t, color="#3a6ea5", ls="--", lw=0.8, label="path change" if i == 0 else None)
    ax.set(xlabel="scenario time t (s)", ylabel="RTT (ms)", title=f"{src} → {dst}")
    ax.legend(fontsize=7, loc="upper left")
    return fig


def completion_figure(run):
    """Completion time (solid) and time to first byte (dashed) CDFs of the finished jobs."""
    done = run.jobs[run.jobs["status"] == "done"]
    fig, ax = plt.subplots(figsize=(10, 3.4))
    for wl, g in done.groupby("workload"):
        v = np.sort(g["completion_ms"].to_numpy(float))
        ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=f"{wl}: completion")
        t = np.sort(g["ttfb_ms"].dropna().to_numpy(float))
        if len(t):
            ax.step(t, np.arange(1, len(t) + 1) / len(t), where="post", ls="--", label=f"{wl}: time to first byte")
    ax.set(xscale="log", xlabel="ms (emulated)", ylabel="fraction of jobs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


if __name__ == "__main__":
    run = netemu.load_run(sys.argv[1] if len(sys.argv) > 1 else "out/run")
    print(run)                                       # what the run holds
    print(run.probes.groupby(["src", "dst"])[["rtt_ms", "oracle_rtt_ms"]].median())
    if run.probes is not None and len(run.probes):
        rtt_figure(run).savefig(run.path / "notebook-rtt.png", dpi=110, bbox_inches="tight")
    if run.jobs is not None and len(run.jobs):
        completion_figure(run).savefig(run.path / "notebook-completion.png", dpi=110, bbox_inches="tight")
    print(f"figures in {run.path}/notebook-*.png")
