"""Plain-text tables of metrics for terminals (make demo prints one)."""

from __future__ import annotations


def _fmt(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "-"


def fingerprint_table(m: dict) -> str:
    """Hit rates, thresholds and false matches by query length, one column per length."""
    lengths = list(m.get("track_hit_rate", {}).keys())
    target = m.get("target_false_match_rate")
    hit_label = f"track top-1 hit (at {target:.0%} false matches)" if isinstance(target, (int, float)) else "track top-1 hit"
    rows = [("query length", *lengths)]
    for key, label in (("track_hit_rate", hit_label), ("segment_exact", "segment exact"),
                       ("segment_near", "segment near (±1)"), ("segment_far", "segment far"),
                       ("speed_changed_hit_rate", "  speed/tempo changed queries"),
                       ("top1_hit_rate_without_threshold", "top-1 with no threshold"),
                       ("thresholds_by_length", "no-match threshold"),
                       ("similarity_thresholds_by_length", "  or similarity at least (either)")):
        if key in m:
            rows.append((label, *[_fmt(m[key].get(k)) for k in lengths]))
    if "false_match_rate_by_length" in m:
        fm = m["false_match_rate_by_length"]
        rows.append(("false matches (test, out-of-db)",
                     *[f"{fm[k]['answered']}/{fm[k]['n']}" if k in fm else "-" for k in lengths]))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    if "false_match_rate" in m:
        lines.append(f"false-match rate, all out-of-database test queries: {m['false_match_rate']:.3f}")
    if "threshold" in m and "thresholds_by_length" not in m:  # metrics written before per-length calibration
        lines.append(f"no-match threshold (chosen on validation queries): {m['threshold']:.3f}")
    return "\n".join(lines)
