"""Plain-text tables of metrics for terminals (make demo prints one)."""

from __future__ import annotations


def fingerprint_table(m: dict) -> str:
    lengths = list(m.get("track_hit_rate", {}).keys())
    rows = [("query length", *lengths)]
    for key, label in (("track_hit_rate", "track top-1 hit"), ("segment_exact", "segment exact"),
                       ("segment_near", "segment near (±1)"), ("segment_far", "segment far")):
        if key in m:
            rows.append((label, *[f"{m[key].get(k, float('nan')):.3f}" for k in lengths]))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    if "false_match_rate" in m:
        lines.append(f"false-match rate (out-of-database queries): {m['false_match_rate']:.3f}")
    if "threshold" in m:
        lines.append(f"no-match threshold (chosen on validation queries): {m['threshold']:.3f}")
    return "\n".join(lines)
