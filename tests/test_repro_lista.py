"""Reproductions of the Moreau talk / Chen et al. 2018 (experiments/moreau.py).

The quick runs of the two cheap experiments run by default; the other quick runs and the
full-run claims are @pytest.mark.slow (``pytest -m slow tests/test_repro_lista.py``).
"""

import json

import pytest

from unrolled.experiments import available, reproduce
from unrolled.experiments.moreau import mp_ratio

NAMES = ["moreau-simulated", "moreau-digits", "moreau-coupling", "moreau-marchenko-pastur", "chen-cpss"]


def test_registered():
    exps = available()
    for name in NAMES:
        assert name in exps


def test_mp_formula_limits():
    assert mp_ratio(1.0, 4.0) == pytest.approx(1.0)  # S = everything: L_S = L
    assert mp_ratio(0.0, 4.0) == pytest.approx(1 / 9)  # one column: 1/(1 + √γ)²
    assert mp_ratio(0.1, 4.0) < mp_ratio(0.2, 4.0)


def test_marchenko_pastur_quick(tmp_path):
    r = reproduce("moreau-marchenko-pastur", quick=True, out=tmp_path)
    assert (tmp_path / "results.json").exists() and (tmp_path / "marchenko_pastur.png").exists()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["experiment"] == "moreau-marchenko-pastur"
    assert r["claims"]["mp_within_5pct"]
    assert r["claims"]["slista_mean_step_gt_1_over_L"]


def test_coupling_quick(tmp_path):
    r = reproduce("moreau-coupling", quick=True, out=tmp_path)
    assert len(r["distance"]) == r["depth"] and (tmp_path / "coupling.png").exists()
    assert r["mean_distance_last_half"] < r["mean_distance_first_half"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["moreau-simulated", "moreau-digits"])
def test_quick_runs(tmp_path, name):
    r = reproduce(name, quick=True, out=tmp_path)
    assert r["table"] and (tmp_path / "results.json").exists() and r["figures"]


# -- full-run claims (long) ------------------------------------------------------------------------


@pytest.mark.slow
def test_simulated_full_claims(tmp_path):
    r = reproduce("moreau-simulated", quick=False, out=tmp_path)
    depth = r["depth"]
    assert depth >= 20
    for lam, res in r["per_lambda"].items():
        ista, fista = res["reference"]["ista"][depth], res["reference"]["fista"][depth]
        g = res["nets"]["SLISTA"]["gap"][-1]
        assert g <= ista / 10 and g < fista, lam
        assert sum(res["nets"]["SLISTA"]["steps_times_L"]) / depth > 1.0
    cp = r["per_lambda"]["0.1"]["nets"]["LISTA-CP"]  # stable across the 3 training seeds, below FISTA-20
    assert len(cp["gap_final"]) == 3 and cp["gap_final_std"] <= 0.5 * cp["gap_final_mean"]
    assert cp["gap_final_mean"] < r["per_lambda"]["0.1"]["reference"]["fista"][depth]
    # ALISTA (unsupervised) is reported in the table: its fixed point is not the Lasso's


@pytest.mark.slow
def test_coupling_full_claims(tmp_path):
    r = reproduce("moreau-coupling", quick=False, out=tmp_path)
    assert r["depth"] == 40 and all(r["claims"].values())


@pytest.mark.slow
def test_marchenko_pastur_full_claims(tmp_path):
    r = reproduce("moreau-marchenko-pastur", quick=False, out=tmp_path)
    assert r["max_rel_error_n_ge_256"] <= 0.05
    assert r["claims"]["slista_mean_step_gt_1_over_L"]


# -- chen-cpss: Chen et al.'s training (experiments/chen2018.py) ------------------------------------


def test_fresh_pairs_are_fresh_and_at_the_snr():
    import torch

    from unrolled.data.lasso import gaussian_dictionary
    from unrolled.experiments.chen2018 import FreshPairs

    A = gaussian_dictionary(30, 60, seed=0)
    draw = FreshPairs(A, snr_db=20.0, seed=1)
    Y1, Z1 = draw(4000)
    Y2, _ = draw(4000)
    assert not torch.equal(Y1, Y2)  # a new batch every call
    assert abs(float((Z1 != 0).float().mean()) - 0.1) < 0.01
    clean = Z1.double() @ torch.as_tensor(A).T
    snr = 10 * torch.log10(clean.pow(2).mean() / (Y1.double() - clean).pow(2).mean())
    assert abs(float(snr) - 20.0) < 0.2
    Yn, Zn = FreshPairs(A, seed=1)(10)
    assert torch.allclose(Yn.double(), Zn.double() @ torch.as_tensor(A).T, atol=1e-5)  # noiseless


def test_fit_phase_stops_early_and_keeps_the_best():
    import torch

    from unrolled.data.lasso import gaussian_dictionary, sparse_measurements
    from unrolled.experiments.chen2018 import FreshPairs, _groups, fit_phase
    from unrolled.nets import LISTA_CP

    A = torch.as_tensor(gaussian_dictionary(20, 40, seed=0))
    val = tuple(torch.as_tensor(t).float() for t in sparse_measurements(A, 100, seed=3))
    net = LISTA_CP(A.float(), 2, 0.05)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    frozen = [{"params": g["params"], "lr": 0.0} for g in _groups(net, range(2), 1.0, 1.0)]
    rec = fit_phase(
        net, FreshPairs(A, seed=2), frozen, depth=2, steps=1000, batch=16, val=val, check_every=5, patience=3
    )
    assert rec["steps"] == 15  # no improvement at lr 0: three checks, then stop
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    rec = fit_phase(
        net,
        FreshPairs(A, seed=2),
        _groups(net, range(2), 0.05, 0.02),
        depth=2,
        steps=200,
        batch=32,
        val=val,
        check_every=10,
        patience=5,
    )
    from unrolled.metrics import nmse_db

    with torch.no_grad():
        assert nmse_db(net(val[0]), val[1]) == pytest.approx(rec["val_nmse_db"], abs=1e-4)  # the best is kept
    assert rec["val_nmse_db"] < nmse_db(LISTA_CP(A.float(), 2, 0.05)(val[0]).detach(), val[1]) - 1.0


def test_groups_split_scalars_from_matrices_by_name():
    import torch

    from unrolled.data.lasso import gaussian_dictionary
    from unrolled.experiments.chen2018 import _groups
    from unrolled.nets import ALISTA, LISTA_CP

    A = torch.as_tensor(gaussian_dictionary(20, 40, seed=0)).float()
    g = _groups(LISTA_CP(A, 3, 0.05), range(2, 3), 0.1, 0.01)
    assert [(x["lr"], len(x["params"])) for x in g] == [(0.1, 2), (0.01, 1)]  # layer 3: a, b, then W
    assert [(x["lr"], len(x["params"])) for x in _groups(ALISTA(A, 3, 0.05), range(3), 0.1, 0.01)] == [(0.1, 6)]


def test_chen_cpss_quick(tmp_path):
    r = reproduce("chen-cpss", quick=True, out=tmp_path)
    assert (tmp_path / "nmse_vs_layers.png").exists() and "partial" not in json.loads(
        (tmp_path / "results.json").read_text()
    )
    assert r["device"] == "cpu"
    noiseless = r["per_setting"]["noiseless"]["nets"]
    assert set(noiseless) == {"LISTA", "LISTA-CP", "LISTA-CPSS", "ALISTA"}
    for label in ("LISTA-CP", "LISTA-CPSS", "ALISTA"):  # trained supervised on fresh samples
        assert r["claims"][f"below_fista.{label}.noiseless"], label
        assert noiseless[label]["train_steps"] > 0


def test_chen_cpss_writes_results_after_every_stage(tmp_path, monkeypatch):
    """A run cut after a few stages leaves a results.json with what was done (none before this change)."""
    from unrolled.experiments import chen2018

    calls = {"n": 0}
    real = chen2018.fit_phase

    def cut_after_two_depths(*args, **kw):
        calls["n"] += 1
        if calls["n"] > 2 * (1 + len(chen2018.REFINE)):  # two depths: each a new-layer and the refine phases
            raise TimeoutError("cut")
        return real(*args, **kw)

    monkeypatch.setattr(chen2018, "fit_phase", cut_after_two_depths)
    with pytest.raises(TimeoutError):
        reproduce("chen-cpss", quick=True, out=tmp_path, nets=["LISTA-CP"], device="cpu")
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["partial"] and saved["in_training"]["net"] == "LISTA-CP"
    assert len(saved["in_training"]["val_nmse_db_by_depth"]) == 2
    assert saved["in_training"]["val_nmse_db_by_depth"][1] < 0


@pytest.mark.slow
def test_chen_cpss_full_claims(tmp_path):
    r = reproduce("chen-cpss", quick=False, out=tmp_path)
    noiseless = r["per_setting"]["noiseless"]["nets"]
    assert noiseless["LISTA-CPSS"]["nmse_db"][-1] <= -45.0  # Chen et al. 2018 Fig. 3: about −50…−60 dB
    assert all(r["claims"][f"below_fista.{label}.noiseless"] for label in noiseless)


# -- moreau-simulated: SLISTA's steps stay in the range the theory gives ----------------------------


def test_step_cap_is_the_largest_coordinate_step():
    """α ≤ 1/min_j g_jᵀd_j: SLISTA (g = d) on columns of unequal norms, ALISTA (its gain W̃)."""
    import math

    import torch

    from unrolled.experiments.moreau import max_log_step, project_steps
    from unrolled.nets import ALISTA, LISTA_CP, SLISTA

    g = torch.Generator().manual_seed(0)
    D = torch.randn(12, 30, generator=g, dtype=torch.float64)
    D = D / D.norm(dim=0) * torch.linspace(0.5, 2.0, 30, dtype=torch.float64)
    net = SLISTA(D, 4, 0.1)
    L = float(torch.linalg.matrix_norm(D, ord=2) ** 2)
    assert max_log_step(net) == pytest.approx(math.log(L / 0.25))
    with torch.no_grad():
        net.a[1].fill_(10.0)
        net.a[2].fill_(-1.0)
    project_steps(net)
    steps = net.steps()
    assert float(steps[1]) == pytest.approx(1 / 0.25) and float(steps[2]) == pytest.approx(math.exp(-1) / L)
    al = ALISTA(D, 3, 0.1)
    Wg = al.layer_matrix(0).double()
    assert math.exp(max_log_step(al)) * al.s0 == pytest.approx(1 / float((Wg * D).sum(0).min()))
    assert max_log_step(LISTA_CP(D, 3, 0.1)) is None  # its matrices carry the scale
