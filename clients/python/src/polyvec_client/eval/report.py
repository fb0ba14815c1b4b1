"""An evaluation report (the dict :func:`.runner.evaluate` returns) as a terminal table or a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def format_table(report: dict[str, Any]) -> str:
    """One row per run: the measures, then p50 / p99 latency in ms; the best value of each column marked *."""
    measures: list[str] = report["measures"]
    runs = report["runs"]
    best = {m: max((r["metrics"][m] for r in runs if r.get("metrics")), default=None) for m in measures}
    header = ["run", "queries", *measures, "p50 ms", "p99 ms"]
    rows = []
    for r in runs:
        if not r.get("metrics"):
            rows.append([r["name"], str(r["queries"]), f"failed: {r.get('error', '')}"])
            continue
        cells = [f"{r['metrics'][m]:.3f}" + ("*" if r["metrics"][m] == best[m] and len(runs) > 1 else " ")
                 for m in measures]
        lat = r["latency_ms"]
        rows.append([r["name"], str(r["queries"]), *cells, f"{lat['p50']:.1f}", f"{lat['p99']:.1f}"])
    widths = [max(len(header[i]), *(len(row[i]) for row in rows if len(row) == len(header)))
              for i in range(len(header))]
    lines = ["  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header))]
    for row in rows:
        if len(row) != len(header):
            lines.append(f"{row[0].ljust(widths[0])}  {row[1].rjust(widths[1])}  {row[2]}")
            continue
        lines.append("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                               for i, c in enumerate(row)))
    q = report["queries"]
    skipped = q["without_qrels"]
    notes = [f"{q['evaluated']} judged queries"
             + (f" ({skipped} without relevant documents in the qrels skipped)" if skipped else "")
             + (f"; latency: {report['latency']}" if report.get("latency") else ""),
             "* best in its column; MRR@10 = ir-measures RR@10, MAP = AP over the top "
             f"{report.get('depth', max(report['k']))}, AvgRecall = mean(R@1, R@10)"]
    errors = [r for r in runs if r.get("metrics") and r.get("errors")]
    notes += [f"{r['name']}: {r['errors']} searches failed (counted 0), e.g. {r['error']}" for r in errors]
    return "\n".join(lines + [""] + notes)


def plot(report: dict[str, Any], path: str | Path) -> Path:
    """Recall@K curves per run, and (with hybrid at several alphas) nDCG@10 / MRR@10 / AvgRecall against
    alpha."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in report["runs"] if r.get("metrics")]
    hybrid = [r for r in runs if r["kind"] == "hybrid"]
    alphas = sorted({r["alpha"] for r in hybrid})
    panels = 2 if len(alphas) > 1 else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.5), squeeze=False)
    ks = report["k"]
    ax = axes[0][0]
    for r in runs:
        ax.plot(ks, [r["metrics"][f"R@{k}"] for k in ks], marker="o", label=r["name"])
    if len(ks) > 1 and ks[-1] / ks[0] >= 20:
        ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set(title=f"Recall@K — {report.get('collection') or 'collection'}", xlabel="K", ylabel="Recall@K",
           ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    if panels == 2:
        ax = axes[0][1]
        for fusion in dict.fromkeys(r["fusion"] for r in hybrid):
            for measure, style in (("nDCG@10", "-"), ("MRR@10", "--"), ("AvgRecall", ":")):
                points = sorted((r["alpha"], r["metrics"][measure]) for r in hybrid if r["fusion"] == fusion)
                ax.plot([a for a, _ in points], [v for _, v in points], style, marker="o",
                        label=f"{measure} {fusion}")
        ax.set(title="hybrid: metric against alpha (0 = BM25, 1 = vector)", xlabel="alpha", ylabel="score",
               ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
