"""The group-difference table (ltpa.qc.groupdiff) and its plot against direct computations on
small hand-made npys: Welch's t and p from scipy.stats.ttest_ind(equal_var=False), the
q-values from scipy.stats.false_discovery_control, shares and pairs counted here."""

import numpy as np
import pytest
from scipy import stats

from ltpa.qc.groupdiff import (
    COLUMNS,
    MIN_MEAN_COUNT,
    bh_q,
    comparisons,
    group_differences,
    two_sided_p,
    welch_t,
    write_group_differences,
)
from ltpa.qc.tables import read_tsv
from ltpa.study import sidecar
from qc_study import write_graphml_with_names


def test_welch_t_and_p_equal_scipy_on_hand_made_samples():
    a = np.array([[0.012, 0.0131, 0.0118, 0.0127], [3.0, 3.0, 3.5, 2.5], [1, 2, 3, 4]], float)
    b = np.array([[0.0095, 0.0101, 0.0090], [3.1, 2.9, 3.3], [1, 1, 1.5]], float)
    t, df = welch_t(a.mean(1), a.var(1, ddof=1), 4, b.mean(1), b.var(1, ddof=1), 3)
    for k in range(3):
        want = stats.ttest_ind(a[k], b[k], equal_var=False)
        assert t[k] == pytest.approx(want.statistic, rel=1e-12)
        assert df[k] == pytest.approx(want.df, rel=1e-12)
        assert two_sided_p(t[k], df[k]) == pytest.approx(want.pvalue, rel=1e-9)
    # no spread in either group: no t (the pair is left out of the table)
    t, df = welch_t(1.0, 0.0, 3, 2.0, 0.0, 3)
    assert np.isnan(t) and np.isnan(df)
    p = np.array([0.01, 0.04, 0.03, 0.2, 0.0001, 0.04])
    np.testing.assert_allclose(bh_q(p), stats.false_discovery_control(p, method="bh"))


def test_groups_are_compared_with_the_first_in_sorted_order():
    assert comparisons({"patient": 5, "control": 4}) == [("patient", "control")]
    assert comparisons({"sib": 3, "ctl": 1, "pat": 2, "": 9}) == [("sib", "pat")]
    assert comparisons({"patient": 5, "control": 1}) == []
    assert comparisons({"b": 2, "a": 2, "c": 2}) == [("b", "a"), ("c", "a")]


N_REGIONS = 6
N_PAIRS = N_REGIONS * (N_REGIONS + 1) // 2


def _write_npy(folder, scan_id, counts, n_unlabeled, graphml, regions):
    """An npy whose pair counts are ``counts`` (triu order of ``regions``), ids from 1."""
    ids = np.concatenate([np.zeros(n_unlabeled, np.int64),
                          np.repeat(np.arange(1, counts.size + 1), counts)])
    npy = folder / f"{scan_id}.npy"
    np.save(npy, np.random.default_rng(len(ids)).permutation(ids))
    sidecar.write(npy, "connection_ids", inputs={"graphml_path": sidecar.file_record(graphml)},
                  params={}, region_ids=list(regions), connection_ids_start_at=1)
    return str(npy)


@pytest.fixture
def small_study(tmp_path):
    """Three groups (control 5 scans, patient 4, sibling 1), a scan without a group, one
    control scan whose region list lacks region 6; Poisson pair counts drawn here."""
    graphml = tmp_path / "atlas.graphml"
    names = write_graphml_with_names(graphml, N_REGIONS)
    rng = np.random.default_rng(7)
    rate = rng.uniform(12, 40, N_PAIRS)
    rate[3] = 2.0  # below MIN_MEAN_COUNT in every scan: not tested
    items, truth = [], []
    for k, group in enumerate(["control"] * 4 + ["patient"] * 4 + ["sibling", ""]):
        lam = rate * rng.uniform(0.9, 1.1, N_PAIRS)
        if group == "patient":
            lam[-3:] *= 0.4  # pairs (5, 5), (5, 6), (6, 6)
        counts = rng.poisson(lam)
        n_unl = int(rng.integers(20, 80))
        items.append((f"s{k}", group, _write_npy(tmp_path, f"s{k}", counts, n_unl, graphml,
                                                 range(1, N_REGIONS + 1))))
        truth.append((group, counts.astype(float), counts.sum() + n_unl, list(range(1, 7))))
    # a control scan with regions 1..5 only: it counts for their pairs, not region 6's
    regions = list(range(1, N_REGIONS))
    counts = rng.poisson(10.0, len(regions) * (len(regions) + 1) // 2)
    items.append(("s-short", "control", _write_npy(tmp_path, "s-short", counts, 30, graphml,
                                                   regions)))
    truth.append(("control", counts.astype(float), counts.sum() + 30, regions))
    return items, truth, names


def _shares_by_pair(truth, group):
    """{(a, b): [share of each scan of ``group`` whose region list has a and b]}."""
    out = {}
    for g, counts, n, regions in truth:
        if g != group:
            continue
        rows, cols = np.triu_indices(len(regions))
        for c, i, j in zip(counts, rows, cols):
            out.setdefault((regions[i], regions[j]), []).append(c / n)
    return out


def test_a_named_reference_group_is_the_one_every_group_is_compared_with():
    sizes = {"patient": 5, "control": 4, "sib": 3, "": 9}
    assert comparisons(sizes, "patient") == [("control", "patient"), ("sib", "patient")]
    assert comparisons(sizes, "control") == [("patient", "control"), ("sib", "control")]
    assert comparisons({"patient": 5, "control": 1}, "control") == []  # too few to compare


def test_the_reference_group_turns_the_comparison_around(small_study):
    items, truth, _ = small_study
    default = group_differences(items)
    turned = group_differences(items, reference="patient")
    assert turned["comparisons"] == [("control", "patient")]
    before = {(r["region_a"], r["region_b"]): r for r in default["rows"]}
    after = {(r["region_a"], r["region_b"]): r for r in turned["rows"]}
    assert set(before) == set(after)
    for pair, r in after.items():
        x = _shares_by_pair(truth, "control")[pair]
        y = _shares_by_pair(truth, "patient")[pair]
        assert r["welch_t"] == pytest.approx(stats.ttest_ind(x, y, equal_var=False).statistic,
                                             rel=1e-5)
        assert r["welch_t"] == pytest.approx(-before[pair]["welch_t"], rel=1e-9)


def test_table_equals_welch_per_pair_from_the_counts(small_study, tmp_path):
    items, truth, names = small_study
    out = tmp_path / "gd.tsv"
    result = write_group_differences(items, out)
    rows = read_tsv(out)
    assert list(rows[0]) == COLUMNS
    assert result["comparisons"] == [("patient", "control")]  # sibling: 1 scan; "": no group
    assert result["n_scans"] == {"control": 5, "patient": 4, "sibling": 1}
    pat, ctl = _shares_by_pair(truth, "patient"), _shares_by_pair(truth, "control")
    want = {}
    for pair, x in pat.items():
        y = ctl[pair]
        n_x, n_y = len(x), len(y)
        both = _counts(truth, "patient", pair) + _counts(truth, "control", pair)
        if sum(both) / (n_x + n_y) < MIN_MEAN_COUNT:
            continue
        res = stats.ttest_ind(x, y, equal_var=False)
        want[pair] = (res.statistic, res.pvalue, np.mean(x) / np.mean(y), n_x, n_y,
                      np.mean(_counts(truth, "patient", pair)),
                      np.mean(_counts(truth, "control", pair)), np.std(y, ddof=1),
                      np.mean(x), np.mean(y), np.std(x, ddof=1), res.df)
    got = {(int(r["region_a"]), int(r["region_b"])): r for r in rows}
    assert set(got) == set(want) and (1, 4) not in got  # pair 3 (1, 4): ~2 streamlines a scan
    assert len(want) == N_PAIRS - 1
    for pair, (t, p, ratio, n_x, n_y, count_x, count_y, sd_y, mean_x, mean_y, sd_x,
               df) in want.items():
        r = got[pair]
        assert float(r["welch_t"]) == pytest.approx(t, rel=1e-5), pair
        assert float(r["p"]) == pytest.approx(p, rel=1e-5), pair
        assert float(r["ratio"]) == pytest.approx(ratio, rel=1e-5), pair
        assert (int(r["n_scans_group"]), int(r["n_scans_reference"])) == (n_x, n_y)
        assert float(r["mean_count_group"]) == pytest.approx(count_x, rel=1e-5)
        assert float(r["mean_count_reference"]) == pytest.approx(count_y, rel=1e-5)
        assert float(r["sd_share_reference"]) == pytest.approx(sd_y, rel=1e-5)
        # each group's own share statistics, not the other group's (a swap passed before)
        assert float(r["mean_share_group"]) == pytest.approx(mean_x, rel=1e-5), pair
        assert float(r["mean_share_reference"]) == pytest.approx(mean_y, rel=1e-5), pair
        assert float(r["sd_share_group"]) == pytest.approx(sd_x, rel=1e-5), pair
        assert float(r["df"]) == pytest.approx(df, rel=1e-5), pair
        assert r["name_a"] == names[pair[0]] and r["name_b"] == names[pair[1]]
        assert r["connection_id"] == ""  # two region lists: no single id
    # region 6's pairs have 4 control scans, the others 5
    assert {int(r["n_scans_reference"]) for r in rows if r["region_b"] == "6"} == {4}
    # ranked by p; q from Benjamini-Hochberg over the tested pairs; flag below 0.05
    ps = [float(r["p"]) for r in rows]
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    assert ps == sorted(ps)
    np.testing.assert_allclose([float(r["q"]) for r in rows],
                               stats.false_discovery_control(
                                   [want[k][1] for k in sorted(want, key=lambda k: want[k][1])]),
                               rtol=1e-5)
    assert all((r["flag"] == "q<0.05") == (float(r["q"]) < 0.05) for r in rows)
    # the patients' lower rates come first (shares: the other pairs' rise a little)
    lower = {(5, 5), (5, 6), (6, 6)}
    assert (int(rows[0]["region_a"]), int(rows[0]["region_b"])) in lower
    assert float(rows[0]["welch_t"]) < 0 and rows[0]["flag"] == "q<0.05"


def _counts(truth, group, pair):
    """The pair's count in each scan of ``group`` whose region list has both regions."""
    out = []
    for g, counts, _, regions in truth:
        if g == group and pair[0] in regions and pair[1] in regions:
            rows, cols = np.triu_indices(len(regions))
            k = [(regions[i], regions[j]) for i, j in zip(rows, cols)].index(pair)
            out.append(counts[k])
    return out


def test_one_region_list_gives_connection_ids_and_the_plot_ranks_the_table(tmp_path):
    from ltpa.qc.report import MAX_RANKED, group_differences_figure

    graphml = tmp_path / "atlas.graphml"
    names = write_graphml_with_names(graphml, N_REGIONS)
    rng = np.random.default_rng(3)
    items = []
    for k in range(8):
        group = "control" if k % 2 else "patient"
        lam = np.full(N_PAIRS, 30.0)
        lam[7] *= 0.5 if group == "patient" else 1.0  # pair 7: (2, 3), id 8
        items.append((f"s{k}", group, _write_npy(tmp_path, f"s{k}", rng.poisson(lam), 50,
                                                 graphml, range(1, N_REGIONS + 1))))
    rows = group_differences(items)["rows"]
    assert rows[0]["connection_id"] == 8 and (rows[0]["region_a"], rows[0]["region_b"]) == (2, 3)
    assert rows[0]["welch_t"] < 0 and rows[0]["ratio"] < 0.7
    out = tmp_path / "gd.tsv"
    write_group_differences(items, out)
    table = read_tsv(out)
    fig, info = group_differences_figure("atlas", table)
    ranked = info["ranked"][("patient", "control")]
    assert len(ranked) == min(MAX_RANKED, len(table))
    assert [label for label, *_ in ranked] == [f"{r['name_a']} -- {r['name_b']}"
                                              for r in table[:len(ranked)]]
    assert ranked[0][0] == f"{names[2]} -- {names[3]}"
    image = fig.axes[0].get_images()[0]
    mat = image.get_array()
    assert mat[1, 2] == pytest.approx(float(table[0]["welch_t"]))  # regions 2, 3 at 1, 2
    assert image.norm.vmin == -image.norm.vmax
    import matplotlib.pyplot as plt

    plt.close(fig)
    fig, info = group_differences_figure("atlas", [])  # no comparison: a figure that says so
    assert info["comparisons"] == [] and "no group comparison" in fig.axes[0].texts[0].get_text()
    plt.close(fig)
