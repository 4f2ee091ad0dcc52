"""NAB's scorer: hand-computed cases, the optimiser against brute force, and the published
`numenta` and `null` results reproduced from their per-row scores (skipped without the data)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from tests.conftest import SHARED_DATA
from trainer.nab.score import (
    NOTHING,
    PROFILES,
    ScoringCorpus,
    ScoringError,
    layout,
    normalised,
    null_raw,
    optimise,
    perfect_raw,
    prepare,
    probationary_rows,
    scaled_sigmoid,
    score_at,
    threshold_sweep,
)

NAB = SHARED_DATA / "nab"


def sig(x: float) -> float:
    """The paper's scaled sigmoid, by hand."""
    return -1.0 if x > 3 else 2 / (1 + math.exp(5 * x)) - 1


MAX_TP = sig(-1.0)


def one_file(n_rows: int = 100, windows=((50, 59),)) -> ScoringCorpus:
    return ScoringCorpus({"c/f.csv": layout(n_rows, windows)})


def flags(n_rows: int, *rows: int) -> dict[str, np.ndarray]:
    scores = np.zeros(n_rows)
    scores[list(rows)] = 1.0
    return {"c/f.csv": scores}


def test_probationary_period_is_15_percent_capped_at_750():
    assert [probationary_rows(n) for n in (100, 4999, 5000, 22695)] == [15, 749, 750, 750]


def test_scaled_sigmoid_matches_the_paper():
    got = scaled_sigmoid(np.array([-1.0, 0.0, 0.5, 3.0, 3.01]))
    assert got == pytest.approx([sig(-1), 0.0, sig(0.5), sig(3.0), -1.0])


def test_a_detection_at_a_window_start_earns_the_true_positive_weight():
    result = score_at(one_file(), flags(100, 50), 0.5, "standard")
    f = result.files["c/f.csv"]
    assert f.raw == pytest.approx(1.0)
    # 100 rows, 15 probationary: 10 window rows, 75 outside
    assert (f.tp, f.fn, f.fp, f.tn) == (1, 9, 0, 75)


def test_only_the_earliest_detection_in_a_window_counts():
    late = score_at(one_file(), flags(100, 59), 0.5, "standard").raw
    assert late == pytest.approx(sig(-1 / 10) / MAX_TP)
    both = score_at(one_file(), flags(100, 55, 59), 0.5, "standard").raw
    assert both == pytest.approx(sig(-5 / 10) / MAX_TP)


def test_false_positives_cost_less_just_after_a_window():
    corpus = one_file()
    before = score_at(corpus, flags(100, 20), 0.5, "standard").raw
    assert before == pytest.approx(-1.0 - 0.11)  # window missed, full false-positive cost
    just_after = score_at(corpus, flags(100, 60), 0.5, "standard").raw
    assert just_after == pytest.approx(-1.0 + 0.11 * sig(1 / 9))
    far_after = score_at(corpus, flags(100, 90), 0.5, "standard").raw
    assert far_after == pytest.approx(-1.0 - 0.11)
    assert before < just_after


def test_probationary_rows_are_not_scored():
    assert score_at(one_file(), flags(100, 3, 10), 0.5, "standard").raw == pytest.approx(-1.0)


def test_profiles_weigh_misses_and_false_positives():
    corpus = one_file()
    missed_and_fp = flags(100, 20)
    got = {p: score_at(corpus, missed_and_fp, 0.5, p).raw for p in PROFILES}
    assert got == pytest.approx(
        {"standard": -1.11, "reward_low_FP_rate": -1.22, "reward_low_FN_rate": -2.11}
    )


def test_a_detection_is_a_score_at_or_above_the_threshold():
    scores = {"c/f.csv": np.where(np.arange(100) == 50, 0.7, 0.0)}
    assert score_at(one_file(), scores, 0.7, "standard").raw == pytest.approx(1.0)
    assert score_at(one_file(), scores, np.nextafter(0.7, 1), "standard").raw == -1.0


def test_normalisation_puts_never_alerting_at_0_and_window_starts_at_100():
    corpus = prepare({"a/x.csv": layout(200, [(40, 49), (120, 139)]), "b/y.csv": layout(100, [])})
    perfect = {"a/x.csv": np.isin(np.arange(200), [40, 120]) * 1.0, "b/y.csv": np.zeros(100)}
    for profile in PROFILES:
        raw = score_at(corpus, perfect, 0.5, profile).raw
        assert raw == perfect_raw(corpus, profile)
        assert normalised(raw, corpus, profile) == pytest.approx(100.0)
        assert normalised(null_raw(corpus, profile), corpus, profile) == 0.0
    assert normalised(0.0, corpus.subset(["b/y.csv"]), "standard") is None


def test_a_window_inside_the_probationary_period_is_not_scored_but_counts_as_perfect():
    corpus = one_file(100, [(5, 9), (50, 59)])
    assert null_raw(corpus, "standard") == -1.0
    assert perfect_raw(corpus, "standard") == 2.0


def brute_force(corpus: ScoringCorpus, scores, profile: str) -> tuple[float, float]:
    """Every distinct score as the threshold, highest first; the first best total wins."""
    candidates = [NOTHING, *sorted({float(v) for s in scores.values() for v in s}, reverse=True)]
    totals = [score_at(corpus, scores, t, profile).raw for t in candidates]
    best = max(totals)
    i = next(i for i, t in enumerate(totals) if t >= best - 1e-9)
    return candidates[i], totals[i]


@pytest.mark.parametrize("seed", range(20))
def test_the_optimiser_finds_what_trying_every_threshold_finds(seed: int):
    rng = np.random.default_rng(seed)
    layouts, scores = {}, {}
    for k in range(3):
        n = int(rng.integers(40, 120))
        cuts = np.sort(rng.choice(np.arange(1, n - 1), size=4, replace=False))
        layouts[f"c{k}/f.csv"] = layout(n, [(cuts[0], cuts[1]), (cuts[2], cuts[3])])
        # few distinct values, so that ties between rows and between totals happen
        scores[f"c{k}/f.csv"] = rng.integers(0, 8, size=n) / 7.0
    corpus = ScoringCorpus(layouts)
    for profile in PROFILES:
        got = optimise(corpus, scores, profile)
        want = brute_force(corpus, scores, profile)
        assert (got.threshold, got.raw) == pytest.approx(want)


def test_a_detector_that_never_rises_is_best_left_silent():
    corpus = one_file()
    got = optimise(corpus, {"c/f.csv": np.full(100, 0.5)}, "standard")
    assert (got.threshold, got.raw) == (NOTHING, -1.0)


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        ({}, "no scores for c/f.csv"),
        ({"c/f.csv": np.zeros(99)}, "99 scores for 100 rows"),
        ({"c/f.csv": np.full(100, np.nan)}, "finite"),
    ],
)
def test_scores_that_do_not_fit_are_named(scores, message: str):
    with pytest.raises(ScoringError, match=message):
        score_at(one_file(), scores, 0.5, "standard")
    with pytest.raises(ScoringError, match=message):
        optimise(one_file(), scores, "standard")


def test_unknown_profile_and_bad_windows_are_named():
    with pytest.raises(ScoringError, match="unknown profile 'lenient'"):
        score_at(one_file(), flags(100, 50), 0.5, "lenient")
    for windows in ([(50, 40)], [(10, 20), (15, 30)], [(90, 100)]):
        with pytest.raises(ScoringError, match="window rows"):
            layout(100, windows)


# --- the published reference results ---------------------------------------------------------

needs_nab = pytest.mark.skipif(
    not (NAB / "reference_results" / "numenta").is_dir(),
    reason=f"NAB's reference results not found under {NAB} (shared/data is optional)",
)


@pytest.fixture(scope="module")
def nab():
    from trainer.nab.corpus import load_corpus

    return load_corpus(NAB)


def reference_scores(nab, detector: str) -> dict[str, np.ndarray]:
    out = {}
    for name in nab.series:
        category, file = name.split("/")
        path = NAB / "reference_results" / detector / category / f"{detector}_{file}"
        with path.open(newline="") as f:
            out[name] = np.array([float(r["anomaly_score"]) for r in csv.DictReader(f)])
    return out


def reference_table(detector: str, profile: str) -> list[dict[str, str]]:
    path = NAB / "reference_results" / detector / f"{detector}_{profile}_scores.csv"
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@needs_nab
@pytest.mark.parametrize("profile", list(PROFILES))
@pytest.mark.parametrize("detector", ["numenta", "null"])
def test_the_published_per_file_scores_and_totals_are_reproduced(nab, detector, profile):
    table = reference_table(detector, profile)
    assert {r["File"] for r in table} == set(nab.series)
    threshold = float(table[0]["Threshold"])
    result = score_at(nab.scoring, reference_scores(nab, detector), threshold, profile)
    for row in table:
        got = result.files[row["File"]]
        # NAB writes 12 significant digits; two decimals are asked for, 1e-6 is what we get
        assert got.raw == pytest.approx(float(row["Score"]), abs=1e-6), row["File"]
        want = tuple(int(row[k]) for k in ("TP", "TN", "FP", "FN"))
        assert (got.tp, got.tn, got.fp, got.fn) == want, row["File"]
    total = sum(float(r["Score"]) for r in table)
    assert result.raw == pytest.approx(total, abs=1e-6)


@needs_nab
def test_the_null_detector_scores_what_never_alerting_scores(nab):
    for profile in PROFILES:
        total = sum(float(r["Score"]) for r in reference_table("null", profile))
        assert null_raw(nab.scoring, profile) == pytest.approx(total)


@needs_nab
def test_the_sweep_agrees_with_scoring_each_threshold_on_numenta(nab):
    scores = reference_scores(nab, "numenta")
    thresholds, sweep = threshold_sweep(nab.scoring, scores)
    picks = np.random.default_rng(0).choice(len(thresholds), size=40, replace=False)
    for profile, w in PROFILES.items():
        totals = -w.fn * sweep.windows + w.fn * sweep.detected + w.fp * sweep.fp_cost
        totals = totals + w.tp / MAX_TP * sweep.tp_reward
        for i in picks:
            assert totals[i] == pytest.approx(
                score_at(nab.scoring, scores, thresholds[i], profile).raw, abs=1e-9
            )
        best = optimise(nab.scoring, scores, profile)
        published = float(reference_table("numenta", profile)[0]["Threshold"])
        assert best.raw >= score_at(nab.scoring, scores, published, profile).raw - 1e-9


def reference_rows(nab, detector: str, name: str) -> list[dict[str, str]]:
    category, file = name.split("/")
    path = NAB / "reference_results" / detector / category / f"{detector}_{file}"
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@needs_nab
@pytest.mark.parametrize("profile", list(PROFILES))
def test_each_window_and_false_alarm_earns_what_nab_wrote_for_it(nab, profile: str):
    """NAB's result files put, in their `S(t)_<profile>` column, each window's credit on the
    window's first row and each false alarm's cost on its own row: ours, row by row."""
    w = PROFILES[profile]
    threshold = float(reference_table("numenta", profile)[0]["Threshold"])
    for name, series in nab.series.items():
        rows = reference_rows(nab, "numenta", name)
        lay = nab.scoring.layouts[name]
        flagged = np.array([float(r["anomaly_score"]) >= threshold for r in rows])
        flagged[: lay.probation] = False
        ours = np.where(flagged & (lay.window_of < 0), w.fp * lay.reward, 0.0)
        for a, b in series.windows:
            hits = np.flatnonzero(flagged[a : b + 1])
            credit = lay.reward[a + hits[0]] * w.tp / MAX_TP if len(hits) else -w.fn
            ours[a] = credit if b >= lay.probation else 0.0
        theirs = np.array([float(r[f"S(t)_{profile}"]) for r in rows])
        assert ours == pytest.approx(theirs, abs=1e-6), name
