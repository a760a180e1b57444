"""Pool the TuNAS studies of several machines or sessions: hw minus random search, paired by seed.

Each study of ``tools/search_vs_random.py`` pairs the two methods seed by seed on one machine (the
same latency table, the same target, the same budget), so a pair is fair on its own and pairs from
different machines pool: the pooled figure is the criterion's paired mean (Student t over the seeds
where both methods meet the target) and the median over every seed with forfeits as losses (sign-test
interval), exactly as ``search_vs_random`` reports one study.

A study is a ``search_vs_random`` output directory (or its ``tunas.json``), or a file of transcribed
earlier outcomes (``docs/data/tunas_earlier.json``: ``{"studies": [{"target_quantile", "machine",
"section", "records": [{"seed", "hw_test_accuracy", "random_test_accuracy" | "d_points", ...}]}]}``)
for studies whose run directories went with their machine.

    python tools/pool_studies.py docs/data/tunas_earlier.json runs/tunas_z5 --out runs/pooled.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from search_vs_random import outcome, outcome_summary, summary_lines  # noqa: E402

from hwnas_darts.io import atomic_write_text  # noqa: E402


def _transcribed(rec: dict[str, Any], where: str) -> float | None:
    """The outcome of one transcribed record: accuracies where both are given, else ``d_points``."""
    hw, rnd = rec.get("hw_test_accuracy"), rec.get("random_test_accuracy")
    if rec.get("hw_forfeit") or rec.get("random_forfeit"):
        return outcome({"hw": {"meets": not rec.get("hw_forfeit"), "test_accuracy": hw},
                        "random": {"meets": not rec.get("random_forfeit"), "test_accuracy": rnd}})
    if hw is not None and rnd is not None:
        return float(hw) - float(rnd)
    if rec.get("d_points") is not None:
        return float(rec["d_points"]) / 100.0
    raise SystemExit(f"{where}: seed {rec.get('seed')} has neither both test accuracies nor d_points")


def load_study(path: str) -> list[dict[str, Any]]:
    """Rows ``{study, machine, seed, target_quantile, outcome, hw_percentile, random_percentile}`` of one study."""
    p = Path(path).resolve()
    if p.is_dir():
        p = p / "tunas.json"
    if not p.is_file():
        raise SystemExit(f"{path}: no such study (a search_vs_random --out directory, its tunas.json, or a file "
                         "of transcribed studies)")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{p}: not valid JSON ({exc})") from None
    rows = []
    if "records" in data:  # a search_vs_random study
        dev = data.get("device") or {}
        machine = dev.get("name") or "unknown machine"
        for r in data["records"]:
            rows.append({"study": str(p), "machine": machine, "seed": r["seed"], "target_quantile": r["target_quantile"],
                         "outcome": outcome(r), "hw_percentile": r["hw"].get("percentile"),
                         "random_percentile": (r["random"] or {}).get("percentile")})
    elif "studies" in data:
        for i, st in enumerate(data["studies"]):
            where = f"{p} study {i} (section {st.get('section', '?')})"
            for key in ("target_quantile", "machine", "records"):
                if key not in st:
                    raise SystemExit(f"{where}: no {key!r}")
            for rec in st["records"]:
                rows.append({"study": f"{p}#{i}", "machine": st["machine"], "seed": rec["seed"],
                             "target_quantile": float(st["target_quantile"]), "outcome": _transcribed(rec, where),
                             "hw_percentile": rec.get("hw_percentile"), "random_percentile": rec.get("random_percentile")})
    else:
        raise SystemExit(f"{p}: neither a search_vs_random tunas.json ('records') nor transcribed studies ('studies')")
    return rows


def pool(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per target: the pooled summary, the machines and seeds in it. The same seed on one machine
    twice (a study passed twice, or two studies of one setting) is refused: it would count one pair
    twice."""
    seen: dict[tuple, str] = {}
    for r in rows:
        key = (r["machine"], r["seed"], r["target_quantile"])
        if key in seen and seen[key] != r["study"]:
            raise SystemExit(f"seed {r['seed']} at q{r['target_quantile']:g} on {r['machine']} is in both {seen[key]} and "
                             f"{r['study']}: pass one of them (a pair must count once)")
        if key in seen:
            raise SystemExit(f"seed {r['seed']} at q{r['target_quantile']:g} on {r['machine']} appears twice in {r['study']} "
                             "(the study passed twice?): a pair must count once")
        seen[key] = r["study"]
    out = []
    for q in sorted({r["target_quantile"] for r in rows}):
        sel = [r for r in rows if r["target_quantile"] == q]
        rec: dict[str, Any] = {"target_quantile": q, "seeds": [r["seed"] for r in sel],
                               "machines": sorted({r["machine"] for r in sel})}
        rec.update(outcome_summary([r["outcome"] for r in sel]))
        # forfeits of the pooled rows, by seed (outcome_summary counts them in the median)
        rec["hw_forfeits"] = [r["seed"] for r in sel if r["outcome"] == float("-inf")]
        rec["random_forfeits"] = [r["seed"] for r in sel if r["outcome"] == float("inf")]
        for m in ("hw", "random"):
            pc = [r[f"{m}_percentile"] for r in sel if r[f"{m}_percentile"] is not None]
            rec[f"{m}_median_percentile"] = statistics.median(pc) if pc else None
        out.append(rec)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("studies", nargs="+", help="search_vs_random output directories or tunas.json files, or files of "
                    "transcribed studies")
    ap.add_argument("--targets", help="only these target quantiles (comma-separated)")
    ap.add_argument("--out", help="also write the report here (markdown)")
    args = ap.parse_args(argv)
    rows = [r for s in args.studies for r in load_study(s)]
    if args.targets:
        keep = {float(q) for q in args.targets.split(",")}
        rows = [r for r in rows if r["target_quantile"] in keep]
    if not rows:
        raise SystemExit("no seeds in these studies" + (f" at targets {args.targets}" if args.targets else ""))
    summary = pool(rows)
    lines = summary_lines(summary) + [""]
    for s in summary:
        per = [f"{r['seed']}: " + ("hw by forfeit" if r["outcome"] == float("inf") else "random by forfeit"
                                  if r["outcome"] == float("-inf") else "both forfeit" if r["outcome"] is None
                                  else f"{100 * r['outcome']:+.2f}")
               for r in rows if r["target_quantile"] == s["target_quantile"]]
        lines.append(f"- q{s['target_quantile']:g}: {len(per)} seeds on {len(s['machines'])} machine(s) "
                     f"({'; '.join(s['machines'])}); per seed (points): {', '.join(per)}")
    text = "\n".join(lines) + "\n"
    if args.out:
        atomic_write_text(args.out, text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
