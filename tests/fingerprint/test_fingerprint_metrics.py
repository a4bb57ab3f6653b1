"""Fingerprint metrics on a hand-worked set of nine queries, and the NMFP file formats."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from avmatch.fingerprint.metrics import (
    ANALYSIS_COLUMNS,
    RESULTS_COLUMNS,
    build_analysis,
    evaluate,
    ground_truth_segment,
    hit_rate_by_degradation,
    hit_rate_by_length,
    length_key,
    plot_hit_rates,
    query_segment_count,
    read_analysis_csv,
    summarize,
    write_analysis_csv,
    write_results_csv,
)
from avmatch.fingerprint.search import Match

HOP = 0.5


def gt_row(qid, ref, offset_s, length_s, degradation, in_db=True):
    return {"query_id": qid, "query_path": f"q/{qid}.wav", "ref_id": ref,
            "ref_path": f"db/{ref}.wav" if in_db else "", "offset_s": offset_s, "length_s": length_s,
            "degradation": degradation, "snr_db": 5.0, "in_db": in_db}


@pytest.fixture
def gt() -> pd.DataFrame:
    return pd.DataFrame([
        gt_row("q1", "A", 3.0, 1.0, "noise"),      # gt segment 6
        gt_row("q2", "A", 3.0, 1.0, "noise"),
        gt_row("q3", "B", 1.25, 2.5, "reverb"),    # 2.5 segments, rounds up to 3
        gt_row("q4", "B", 0.0, 2.5, "reverb"),
        gt_row("q5", "C", 2.0, 2.5, "noise"),      # gt segment 4
        gt_row("q6", "", 0.0, 1.0, "noise", in_db=False),
        gt_row("q7", np.nan, 0.0, 2.5, "reverb", in_db=False),
        gt_row("q8", "A", 4.0, 1.0, "clean"),      # gt segment 8
        gt_row("q9", "A", 0.0, 2.5, "clean"),      # no prediction at all
    ])


@pytest.fixture
def preds() -> dict[str, Match]:
    return {
        "q1": Match("A", 6, 0.9, 5),    # exact
        "q2": Match("A", 7, 0.8, 4),    # near (+1), not exact
        "q3": Match("B", 5, 0.7, 3),    # far (+2): right track, wrong place
        "q4": Match("C", 0, 0.6, 2),    # wrong track
        "q5": Match(None, 4, 0.2, 1),   # rejected by the threshold: a miss
        "q6": Match("A", 0, 0.65, 2),   # OOV that returned a track: false match
        "q7": Match(None, 0, 0.1, 1),   # OOV correctly rejected
        "q8": Match("A", 7, 0.75, 3),   # near (-1)
    }


def test_hand_worked_metrics(gt: pd.DataFrame, preds: dict[str, Match]) -> None:
    m = evaluate(gt, preds, HOP, query_lengths=[1, 2.5, 5])
    assert m["track_hit_rate"] == {"1s": 1.0, "2.5s": 0.25, "5s": None}
    assert m["segment_exact"] == {"1s": pytest.approx(1 / 3), "2.5s": 0.0, "5s": None}
    assert m["segment_near"] == {"1s": 1.0, "2.5s": 0.0, "5s": None}
    assert m["segment_far"] == {"1s": 0.0, "2.5s": 0.25, "5s": None}
    assert m["false_match_rate"] == 0.5
    assert m["wrong_track_rate"] == pytest.approx(1 / 7)
    assert m["n_queries"] == 9
    assert set(m) == {"track_hit_rate", "segment_exact", "segment_near", "segment_far",
                      "false_match_rate", "wrong_track_rate", "n_queries", "by_degradation"}
    noise = m["by_degradation"]["noise"]
    assert noise == {"track_hit_rate": pytest.approx(2 / 3), "segment_exact": pytest.approx(1 / 3),
                     "segment_near": pytest.approx(2 / 3), "segment_far": 0.0,
                     "false_match_rate": 1.0, "wrong_track_rate": 0.0, "n_queries": 4}
    assert m["by_degradation"]["reverb"]["wrong_track_rate"] == 0.5
    assert m["by_degradation"]["clean"]["false_match_rate"] is None
    json.dumps(m)   # valid DVC metrics: plain JSON types only


def test_default_length_keys_come_from_the_ground_truth(gt, preds) -> None:
    assert list(evaluate(gt, preds, HOP)["track_hit_rate"]) == ["1s", "2.5s"]
    assert [length_key(x) for x in (1, 2.0, 2.5, 10)] == ["1s", "2s", "2.5s", "10s"]


def test_segment_conventions() -> None:
    assert ground_truth_segment([0.0, 0.24, 0.25, 3.0, 3.74], HOP).tolist() == [0, 0, 1, 6, 7]
    assert query_segment_count([1, 2, 2.5, 3, 5, 10], HOP, 1.0).tolist() == [1, 3, 4, 5, 9, 19]


def test_analysis_rows(gt, preds) -> None:
    a = build_analysis(gt, preds, HOP).set_index("query_id")
    assert a.loc["q3", "gt_start_segment"] == 3 and bool(a.loc["q3", "segment_far"])
    assert a.loc["q4", "pred_track_path"] == "db/C.wav"          # path known from the ground truth
    assert a.loc["q5", "pred_track_path"] == "" and pd.isna(a.loc["q5", "pred_start_segment"])
    assert a.loc["q5", "score"] == 0.2
    assert pd.isna(a.loc["q9", "score"]) and not a.loc["q9", "track_hit"]
    assert pd.isna(a.loc["q6", "gt_start_segment"]) and a.loc["q6", "gt_track_path"] == ""
    assert a.loc["q3", "query_seq_len"] == 4


def test_in_db_query_without_ref_is_an_error(gt, preds) -> None:
    gt.loc[0, "ref_id"] = ""
    with pytest.raises(ValueError, match="q1"):
        build_analysis(gt, preds, HOP)


def test_results_csv_format(tmp_path, gt, preds) -> None:
    analysis = build_analysis(gt, preds, HOP)
    path = write_results_csv(tmp_path / "results.csv", analysis)
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(RESULTS_COLUMNS)
    assert lines[1] == "q/q1.wav,1,db/A.wav,6,0.9"
    assert lines[5] == "q/q5.wav,4,,,0.2"
    assert lines[9] == "q/q9.wav,4,,,"
    rows = [{"query_fp_path": "x.npy", "query_seq_len": 3, "pred_track_path": "db/A.wav",
             "pred_start_segment": 2, "score": 0.5}]
    assert write_results_csv(tmp_path / "r2.csv", rows).read_text().splitlines()[1] == "x.npy,3,db/A.wav,2,0.5"


def test_analysis_csv_roundtrip_gives_the_same_metrics(tmp_path, gt, preds) -> None:
    analysis = build_analysis(gt, preds, HOP)
    path = write_analysis_csv(tmp_path / "analysis.csv", analysis)
    header = path.read_text().splitlines()[0]
    assert header == ",".join(ANALYSIS_COLUMNS)
    back = read_analysis_csv(path)
    assert summarize(back, [1, 2.5]) == summarize(analysis, [1, 2.5])


def test_plot_data(gt, preds) -> None:
    analysis = build_analysis(gt, preds, HOP)
    by_len = hit_rate_by_length(analysis)
    assert list(by_len.columns) == ["length_s", "track_hit_rate", "segment_exact", "segment_near"]
    assert by_len["length_s"].tolist() == [1.0, 2.5]
    assert by_len["track_hit_rate"].tolist() == [1.0, 0.25]
    by_deg = hit_rate_by_degradation(analysis)
    assert list(by_deg.columns) == ["degradation", "length_s", "track_hit_rate"]
    assert list(by_deg.itertuples(index=False, name=None)) == [
        ("clean", 1.0, 1.0), ("clean", 2.5, 0.0), ("noise", 1.0, 1.0), ("noise", 2.5, 0.0),
        ("reverb", 2.5, 0.5)]


def test_plot_hit_rates_writes_a_png(tmp_path, gt, preds) -> None:
    out = plot_hit_rates(build_analysis(gt, preds, HOP), tmp_path / "plots" / "hit_rates.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
