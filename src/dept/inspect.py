"""What an adapter's tensors look like next to the frozen model's vocabulary.

    prompt vector i   its k nearest vocabulary rows by cosine similarity, and its RMS over
                      the embeddings' RMS (1.0: as large as a typical token embedding)
    shared nearest    how many prompt vectors have the same nearest token as another one
    update row j      |scale·(A·B)[j]|, the change made to the j-th real input token, and its
                      share of the mean norm of a token embedding

Pure arithmetic over a trained adapter (its config and tensors) and the embedding table (V x d), taken as
arguments; `dept inspect` passes the table as the model receives it (the embedding module's
output for every id, so a scale inside the module, as Gemma's √d, counts). docs/method.md says what these numbers do not mean.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor
from torch.nn import functional as F

from .trained import TrainedAdapter


def inspect_adapter(adapter: TrainedAdapter, table: Tensor, tokens=None, top_k: int = 5) -> dict:
    """The report as a JSON-ready dict. `tokens(ids) -> strings` names vocabulary rows (ids if None).
    The tensors are found by the roles the adapter gives them (prompt, lowrank), not by file keys."""
    config = adapter.config
    E = table.detach().float().cpu()                                   # (V, d)
    V, d = E.shape
    rms = float(E.pow(2).mean().sqrt())
    mean_norm = float(E.norm(dim=1).mean())
    report: dict = {"prompt_length": config.prompt_length, "rank": config.rank, "max_length": config.max_length,
                    "scale": config.scale, "vocab_size": V, "hidden_size": d, "embedding_rms": rms,
                    "mean_embedding_norm": mean_norm, "top_k": top_k}
    name = tokens or (lambda ids: [str(i) for i in ids])
    for P in adapter.role("prompt"):
        P = P.detach().float().cpu()                                   # (m, d)
        cosine = F.normalize(P, dim=1) @ F.normalize(E, dim=1).T       # (m, V)
        sims, ids = cosine.topk(min(top_k, V), dim=1)                  # (m, k)
        vector_rms = P.pow(2).mean(dim=1).sqrt()                       # (m,)
        report["prompt"] = [
            {"index": i, "norm": float(P[i].norm()), "rms_ratio": float(vector_rms[i] / rms),
             "nearest": [{"id": int(t), "token": s, "cosine": float(c)}
                         for t, s, c in zip(ids[i].tolist(), name(ids[i].tolist()), sims[i].tolist())]}
            for i in range(P.shape[0])]
        first = ids[:, 0].tolist()
        counts = {t: first.count(t) for t in set(first)}
        shared = {t: n for t, n in counts.items() if n > 1}
        report["shared_nearest"] = {
            "vectors": sum(shared.values()), "distinct_nearest": len(counts),
            "tokens": [{"id": t, "token": name([t])[0], "vectors": n}
                       for t, n in sorted(shared.items(), key=lambda item: (-item[1], item[0]))]}
        report["prompt_cosine"] = (F.normalize(P, dim=1) @ F.normalize(P, dim=1).T).tolist()  # (m, m)
    lowrank = adapter.role("lowrank")
    if lowrank:
        A, B = (t.detach().float().cpu() for t in lowrank)              # (s, r), (r, d)
        U = config.scale * (A @ B)                                     # (s, d)
        norms = U.norm(dim=1)                                          # (s,)
        share = norms / mean_norm
        report["update"] = {"norms": norms.tolist(), "share": share.tolist(), "max_share": float(share.max()),
                            "mean_share": float(share.mean()), "argmax_position": int(share.argmax())}
    return report


def format_report(report: dict) -> str:
    """The report as text for a terminal."""
    lines = [(f"prompt_length m={report['prompt_length']}  rank r={report['rank']}  max_length s="
              f"{report['max_length']}  embedding RMS {report['embedding_rms']:.4g}  "
              f"mean embedding norm {report['mean_embedding_norm']:.4g}")]
    for row in report.get("prompt", []):
        near = ", ".join(f"{n['token']!r} {n['cosine']:.3f}" for n in row["nearest"])
        lines.append(f"  P[{row['index']:>3}]  rms x{row['rms_ratio']:.2f}  nearest: {near}")
    if "shared_nearest" in report:
        shared = report["shared_nearest"]
        lines.append(f"{shared['vectors']} of {report['prompt_length']} prompt vectors share their nearest token "
                     f"with another ({shared['distinct_nearest']} distinct nearest tokens)")
    if "update" in report:
        u = report["update"]
        lines.append(f"update |scale·A·B| per position: max {u['max_share']:.1%} of the mean embedding norm "
                     f"(position {u['argmax_position']}), mean {u['mean_share']:.1%}")
    return "\n".join(lines)


def plot_report(report: dict, path: str | Path) -> Path:
    """A PNG: the prompt vectors' cosine-similarity heatmap and the update's norm against position."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    if "prompt_cosine" in report:
        image = left.imshow(report["prompt_cosine"], vmin=-1, vmax=1, cmap="coolwarm")
        fig.colorbar(image, ax=left, fraction=0.046)
        left.set_title("cosine similarity between prompt vectors")
        left.set_xlabel("prompt vector")
        left.set_ylabel("prompt vector")
    else:
        left.text(0.5, 0.5, "no soft prompt (m = 0)", ha="center", va="center")
        left.set_axis_off()
    if "update" in report:
        share = report["update"]["share"]
        right.plot(range(len(share)), [100 * v for v in share])
        right.set_xlabel("input position (i-th real token)")
        right.set_ylabel("|scale·A·B| as % of the mean embedding norm")
        right.set_title("low-rank update by position")
        right.grid(alpha=0.3)
    else:
        right.text(0.5, 0.5, "no low-rank update (r = 0)", ha="center", va="center")
        right.set_axis_off()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
