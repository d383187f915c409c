#!/usr/bin/env python3
"""Pictures of a `pszero-bench sweep` (results.json, schema pszero.sweep/1).

    scripts/plot.py bench-results/<stamp> [--out DIR] [--simulate FILE.json] [--dpi 80]

Writes PNGs (to DIR, default <results dir>/plots) for what the sweep measured:
  busbw_<op>.png      collective bus bandwidth vs size, one line per rank count, with the
                      Open MPI line (dashed) where the item ran with peer mpi
  step_time.png       median step time per sync mode vs workers (one panel per model)
  memory.png          model-state memory of the largest rank per mode at the largest worker
                      count, stacked by category, the ZeRO formula's bytes marked
  bytes_per_step.png  bytes one rank sent in a step per mode and worker count, theory marked
  simulate.png        the simulator's projected step time vs workers per mode: from the
                      sweep's simulate items, or from --simulate (pszero-bench simulate --json)
A picture whose data the sweep lacks is skipped with a note. Exit 0 when at least one PNG
was written, 1 when none, 2 for bad arguments, 77 when matplotlib is missing (setup.sh
installs Debian's python3-matplotlib, for /usr/bin/python3: under another python3 the
script runs itself again with /usr/bin/python3).
"""
import argparse
import json
import os
import sys

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    DEBIAN_PYTHON = "/usr/bin/python3"
    if os.path.realpath(sys.executable) != os.path.realpath(DEBIAN_PYTHON) and os.access(
        DEBIAN_PYTHON, os.X_OK
    ) and not os.environ.get("PSZERO_PLOT_REEXEC"):
        os.environ["PSZERO_PLOT_REEXEC"] = "1"
        os.execv(DEBIAN_PYTHON, [DEBIAN_PYTHON, os.path.abspath(__file__)] + sys.argv[1:])
    print("plot.py: matplotlib is not installed (scripts/setup.sh installs python3-matplotlib)",
          file=sys.stderr)
    sys.exit(77)

MODES = ["allreduce", "zero1", "zero2", "zero3", "ps"]
COLORS = {"allreduce": "C0", "zero1": "C1", "zero2": "C2", "zero3": "C3", "ps": "C4"}
MIB = 1024.0 * 1024.0


def mode_label(run):
    return "ps/%d" % run.get("servers", 0) if run.get("sync") == "ps" else run.get("sync", "?")


def mode_key(label):
    base = label.split("/")[0]
    return (MODES.index(base) if base in MODES else len(MODES), label)


def human_bytes(n):
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            v = n / size
            return ("%d%s" % (v, unit)) if v == int(v) else ("%.1f%s" % (v, unit))
    return "%d" % n


def ok_results(doc, kind):
    return [it["result"] for it in doc.get("items", [])
            if it.get("kind") == kind and isinstance(it.get("result"), dict)]


def train_runs(doc):
    runs = []
    for result in ok_results(doc, "train"):
        for run in result.get("runs", []):
            if run.get("error") is None and run.get("median_step_s") is not None:
                runs.append(run)
    return runs


def save(fig, out_dir, name, dpi, written):
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    written.append(path)


def plot_busbw(doc, out_dir, dpi, written):
    by_op = {}
    for r in ok_results(doc, "collective"):
        by_op.setdefault(r.get("op", "?"), []).append(r)
    if not by_op:
        print("plot.py: no collective results: busbw plots skipped")
    for op, results in sorted(by_op.items()):
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for i, r in enumerate(sorted(results, key=lambda r: r.get("ranks", 0))):
            color = "C%d" % i
            rows = r.get("rows", [])
            ax.plot([x["bytes"] for x in rows], [x["busbw_gbps"] for x in rows], "o-",
                    color=color, label="pszero, %d ranks" % r.get("ranks", 0))
            mpi = r.get("mpi_rows")
            if mpi:
                ax.plot([x["bytes"] for x in mpi], [x["busbw_gbps"] for x in mpi], "s--",
                        color=color, alpha=0.7, label="Open MPI, %d ranks" % r.get("ranks", 0))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("size (bytes)")
        ax.set_ylabel("busbw (GB/s)")
        ax.set_title("%s: bus bandwidth vs size" % op)
        ticks = sorted({x["bytes"] for r in results for x in r.get("rows", [])})
        if ticks:
            step = max(1, len(ticks) // 8)
            ax.set_xticks(ticks[::step])
            ax.set_xticklabels([human_bytes(t) for t in ticks[::step]])
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        save(fig, out_dir, "busbw_%s.png" % op, dpi, written)


def plot_step_time(runs, out_dir, dpi, written):
    models = sorted({r["model"] for r in runs})
    if not models:
        print("plot.py: no train results: step time, memory and bytes plots skipped")
        return
    fig, axes = plt.subplots(1, len(models), figsize=(6.4 * len(models), 4.0), squeeze=False)
    for ax, model in zip(axes[0], models):
        series = {}
        for r in runs:
            if r["model"] == model:
                series.setdefault(mode_label(r), []).append((r["workers"], r["median_step_s"]))
        for label in sorted(series, key=mode_key):
            pts = sorted(series[label])
            ax.plot([p[0] for p in pts], [p[1] * 1e3 for p in pts], "o-",
                    color=COLORS.get(label.split("/")[0]), label=label)
        workers = sorted({r["workers"] for r in runs if r["model"] == model})
        ax.set_xscale("log", base=2)
        ax.set_xticks(workers)
        ax.set_xticklabels([str(w) for w in workers])
        ax.set_xlabel("workers")
        ax.set_ylabel("median step time (ms)")
        ax.set_title("%s: step time per mode" % model)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    save(fig, out_dir, "step_time.png", dpi, written)


def plot_memory(runs, out_dir, dpi, written):
    models = sorted({r["model"] for r in runs if r.get("memory")})
    if not models:
        print("plot.py: no per-category memory in the train results: memory plot skipped")
        return
    categories = [("params", "C0", None), ("grads", "C1", None), ("optimizer", "C2", None),
                  ("gathered_params", "C0", "//"), ("grad_buckets", "C1", "//")]
    fig, axes = plt.subplots(1, len(models), figsize=(6.4 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [r for r in runs if r["model"] == model and r.get("memory")]
        workers = max(r["workers"] for r in mine)
        mine = sorted([r for r in mine if r["workers"] == workers],
                      key=lambda r: mode_key(mode_label(r)))
        xs = range(len(mine))
        bottom = [0.0] * len(mine)
        for cat, color, hatch in categories:
            vals = [(r["memory"].get("peak") or {}).get(cat) or 0 for r in mine]
            if not any(vals):
                continue
            vals = [v / MIB for v in vals]
            ax.bar(xs, vals, 0.6, bottom=bottom, color=color, hatch=hatch,
                   alpha=0.5 if hatch else 0.9, edgecolor="white" if not hatch else color,
                   label=cat + (" (transient)" if hatch else ""))
            bottom = [b + v for b, v in zip(bottom, vals)]
        for x, r in zip(xs, mine):
            state = r.get("model_state_bytes") or {}
            predicted = state.get("predicted")
            if predicted:
                y = predicted / MIB
                ax.plot([x - 0.38, x + 0.38], [y, y], color="black", linewidth=2,
                        label="ZeRO formula" if x == 0 else None)
                ax.annotate(state.get("formula", ""), (x, y), textcoords="offset points",
                            xytext=(0, 4), ha="center", fontsize=8)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([mode_label(r) for r in mine])
        ax.set_ylabel("MiB, largest rank (peak)")
        ax.set_title("%s: model state per rank, %d workers" % (model, workers))
        ax.set_ylim(0, max(bottom + [1]) * 1.2)
        ax.legend(fontsize=7, loc="upper right")
        ax.grid(True, axis="y", alpha=0.3)
    save(fig, out_dir, "memory.png", dpi, written)


def plot_bytes(runs, out_dir, dpi, written):
    models = sorted({r["model"] for r in runs})
    if not models:
        return
    fig, axes = plt.subplots(1, len(models), figsize=(6.4 * len(models), 4.0), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [r for r in runs if r["model"] == model]
        labels = sorted({mode_label(r) for r in mine}, key=mode_key)
        workers = sorted({r["workers"] for r in mine})
        width = 0.8 / max(1, len(workers))
        theory_labelled = False
        for j, w in enumerate(workers):
            for i, label in enumerate(labels):
                run = next((r for r in mine if r["workers"] == w and mode_label(r) == label), None)
                if run is None:
                    continue
                b = run.get("bytes_per_step") or {}
                x = i - 0.4 + width * (j + 0.5)
                ax.bar(x, (b.get("sent") or 0) / MIB, width * 0.9, color="C%d" % j,
                       label="%d workers" % w if i == 0 else None)
                if b.get("theory"):
                    ax.plot([x - width * 0.45, x + width * 0.45], [b["theory"] / MIB] * 2,
                            color="black", linewidth=1.5,
                            label=None if theory_labelled else "theory")
                    theory_labelled = True
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels)
        ax.set_ylabel("MiB sent per step (largest rank)")
        ax.set_title("%s: bytes per step per mode" % model)
        ax.grid(True, axis="y", alpha=0.3)
        handles, names = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=8)
    save(fig, out_dir, "bytes_per_step.png", dpi, written)


def plot_simulate(docs, out_dir, dpi, written):
    docs = [d for d in docs if isinstance(d.get("projection"), dict)]
    if not docs:
        print("plot.py: no simulator projection (simulate item or --simulate): plot skipped")
        return
    fig, axes = plt.subplots(1, len(docs), figsize=(6.4 * len(docs), 4.2), squeeze=False)
    for ax, doc in zip(axes[0], docs):
        for mode in sorted(doc["projection"], key=mode_key):
            pts = sorted((p["workers"], p["step_s"]) for p in doc["projection"][mode])
            label = mode
            if mode == "ps":
                label = "ps/%s" % doc.get("options", {}).get("servers", "?")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", markersize=3,
                    color=COLORS.get(mode), label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("workers")
        ax.set_ylabel("predicted step time (s)")
        work = doc.get("workload", {})
        title = "simulated %s" % work.get("name", "?")
        if doc.get("calibration"):
            title += " (calibrated on the sweep)"
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        counts = sorted({p["workers"] for pts in doc["projection"].values() for p in pts})
        step = max(1, (len(counts) + 5) // 6)
        ax.set_xticks(counts[::step])
        ax.set_xticklabels([str(c) for c in counts[::step]])
        ax.legend(fontsize=8)
    save(fig, out_dir, "simulate.png", dpi, written)


def main():
    parser = argparse.ArgumentParser(description="PNG plots of a pszero-bench sweep")
    parser.add_argument("results", help="results.json, or the sweep's directory")
    parser.add_argument("--out", help="directory for the PNGs (default: <results dir>/plots)")
    parser.add_argument("--simulate", action="append", default=[],
                        help="pszero-bench simulate --json output with --project-to (repeatable)")
    parser.add_argument("--dpi", type=int, default=80, help="resolution (default 80)")
    args = parser.parse_args()
    path = args.results
    if os.path.isdir(path):
        path = os.path.join(path, "results.json")
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        print("plot.py: error: %s: %s" % (path, e), file=sys.stderr)
        return 2
    if doc.get("schema") != "pszero.sweep/1":
        print("plot.py: error: %s: not a pszero-bench sweep results.json" % path, file=sys.stderr)
        return 2
    sims = ok_results(doc, "simulate")
    for s in args.simulate:
        try:
            with open(s) as f:
                sims.append(json.load(f))
        except (OSError, ValueError) as e:
            print("plot.py: error: --simulate: %s: %s" % (s, e), file=sys.stderr)
            return 2
    out_dir = args.out or os.path.join(os.path.dirname(os.path.abspath(path)), "plots")
    os.makedirs(out_dir, exist_ok=True)
    written = []
    runs = train_runs(doc)
    plot_busbw(doc, out_dir, args.dpi, written)
    plot_step_time(runs, out_dir, args.dpi, written)
    plot_memory(runs, out_dir, args.dpi, written)
    plot_bytes(runs, out_dir, args.dpi, written)
    plot_simulate(sims, out_dir, args.dpi, written)
    for w in written:
        print(w)
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
