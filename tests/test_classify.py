"""Classification with the multi-layer nets (nets/classifier.py, ur.train's cross-entropy): a tiny
convolutional ML-ISTA classifier learns the 8×8 digits, the recorded accuracy is the kept weights'
accuracy, a resumed run is the uninterrupted one, the ρ schedule, save/load and bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import unrolled as ur
from unrolled.data.images import load_digits
from unrolled.nets import Classifier, LayeredBPNet, MLFISTANet, MLISTANet, conv_dictionaries, rho_schedule
from unrolled.training import one_hot_labels


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits()
    X = X.astype(np.float32)
    return (X[:500], y[:500]), (X[1500:], y[1500:])


def tiny(cls=MLISTANet, depth=3, seed=0, **kw):
    """Two non-negative conv layers on 8×8 images: 1 → 8 channels (k 3), 8 → 16 (k 3, stride 2)."""
    Ds = conv_dictionaries((1, 8, 8), (8, 16), (3, 3), (1, 2), seed=seed)
    return Classifier(cls(Ds, depth, 0.0, nonneg=True, **kw), 10, seed=seed)


def fit(clf, digits, **kw):
    (X, y), val = digits
    opts = dict(loss="cross-entropy", val=val, epochs=3, batch_size=50, lr=1e-2, progress=False)
    return ur.train(clf, X, y, **{**opts, **kw})


def test_a_conv_ml_ista_classifier_learns_the_digits(digits):
    clf = tiny()
    hist = fit(clf, digits)
    assert len(hist.val_accuracy) == 3 and all(0 <= a <= 1 for a in hist.val_accuracy)
    assert max(hist.val_accuracy) > 0.5  # chance is 0.1
    Xv, yv = digits[1]
    kept = float((clf.predict(torch.from_numpy(Xv)) == torch.from_numpy(yv)).double().mean())
    assert kept == pytest.approx(hist.val_accuracy[hist.best_epoch], abs=1e-12)
    assert hist.val_loss[hist.best_epoch] == min(hist.val_loss)


def test_cross_entropy_of_one_hot_rows_is_that_of_integer_labels():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(7, 4, generator=g, dtype=torch.float64), torch.tensor([0, 3, 1, 1, 2, 0, 3])
    assert torch.allclose(F.cross_entropy(logits, one_hot_labels(labels, 4)), F.cross_entropy(logits, labels))


@pytest.mark.parametrize("cls", (MLISTANet, MLFISTANet, LayeredBPNet))
def test_every_depth_classifies_with_the_same_parameters_and_saves(cls, tmp_path):
    count = {d: sum(p.numel() for p in tiny(cls, d).parameters()) for d in (1, 7)}
    assert count[1] == count[7]
    clf = tiny(cls, 2, seed=3)
    with torch.no_grad():
        clf.head.bias.add_(0.5)
    back = ur.load(clf.save(tmp_path / "clf.safetensors"))
    assert isinstance(back, Classifier) and type(back.net) is cls
    Y = torch.rand(5, 64)
    with torch.no_grad():
        assert torch.equal(back(Y), clf(Y))
        assert torch.equal(back(Y.reshape(5, 1, 8, 8)), clf(Y))


def test_a_resumed_classification_run_with_a_rho_schedule_is_the_same_run(digits, tmp_path):
    (X, y), (Xv, yv) = digits
    small = (X[:150], y[:150]), (Xv[:100], yv[:100])
    schedule = rho_schedule(3)
    whole = tiny(depth=2, rho=0.0)
    h_whole = fit(whole, small, on_epoch=schedule, checkpoint=tmp_path / "a.ckpt")

    class Stop(Exception):
        pass

    def stop_at_2(model, epoch, history):
        if epoch == 2:
            assert len(history.val_accuracy) == 2
            raise Stop
        schedule(model, epoch, history)

    cut = tiny(depth=2, rho=0.0)
    with pytest.raises(Stop):
        fit(cut, small, on_epoch=stop_at_2, checkpoint=tmp_path / "b.ckpt")
    resumed = tiny(depth=2, rho=0.0)
    h_resumed = fit(resumed, small, on_epoch=schedule, checkpoint=tmp_path / "b.ckpt")
    assert h_resumed.resumed_from == 2
    assert h_resumed.val_accuracy == h_whole.val_accuracy and h_resumed.train_loss == h_whole.train_loss
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert resumed.net.rho == whole.net.rho


def test_rho_schedule_goes_from_zero_to_its_final_value():
    net = MLISTANet(conv_dictionaries((1, 8, 8), (4,), (3,), (1,)), 2)
    values = []
    for epoch in range(5):
        rho_schedule(5, final=0.5)(net, epoch)
        values.append(net.rho)
    assert values[0] == 0 and values[-1] == pytest.approx(0.5) and values == sorted(values)
    with pytest.raises(TypeError, match="MLISTANet"):
        rho_schedule(5)(LayeredBPNet(conv_dictionaries((1, 8, 8), (4,), (3,), (1,)), 2), 0)


def test_bad_classification_input_is_refused_by_name(digits):
    (X, y), _ = digits
    clf = tiny(depth=1)
    with pytest.raises(TypeError, match="labels"):
        ur.train(clf, X, y.astype(np.float64), loss="cross-entropy", epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        ur.train(clf, X, y + 1, loss="cross-entropy", epochs=1, progress=False)
    with pytest.raises(ValueError, match="Classifier"):
        ur.train(clf.net, X, y, loss="cross-entropy", epochs=1, progress=False)
    with pytest.raises(ValueError, match="n_classes"):
        Classifier(clf.net, 1)
    with pytest.raises(TypeError, match="on_epoch"):
        ur.train(clf, X, y, loss="cross-entropy", epochs=1, progress=False, on_epoch=3)


def test_sulam_classify_runs_small_and_keeps_partial_results(tmp_path, monkeypatch):
    """The reproduction on the 8×8 digits, one seed, 2 epochs; cut off during the third model, its
    results.json still holds the two finished ones."""
    import json

    from unrolled.experiments import sulam_classify

    monkeypatch.setitem(
        sulam_classify.SETTINGS, "quick", {**sulam_classify.SETTINGS["quick"], "n_train": 128, "n_test": 100}
    )
    res = sulam_classify.run(True, tmp_path / "full", 0, data={"digits": None}, epochs=2)
    assert len(set(res["parameters"].values())) == 1 and len(res["table"]) == 1 + len(sulam_classify.MODELS)
    for model, by_seed in res["runs"].items():
        assert len(by_seed["0"]["test_accuracy"]) == 2, model
    assert (tmp_path / "full" / "accuracy.png").is_file()

    calls = []
    real = sulam_classify.train

    def cut_at_third(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(sulam_classify, "train", cut_at_third)
    with pytest.raises(KeyboardInterrupt):
        sulam_classify.run(True, tmp_path / "cut", 0, data={"digits": None}, epochs=2)
    saved = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert set(saved["summary"]) == {"feed-forward", "layered BP"}
    with pytest.raises(ValueError, match="one --data set"):
        sulam_classify.run(True, tmp_path, 0, data={"digits": None, "mnist": "x"})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_classification_training_on_cuda(digits):
    clf = tiny(depth=2).to("cuda")
    hist = fit(clf, digits, epochs=1)
    assert clf.head.weight.is_cuda and clf.net.op.base.weight.is_cuda
    assert 0 <= hist.val_accuracy[0] <= 1 and np.isfinite(hist.train_loss[0])


def test_reproduce_options_epochs_seeds_batch_size_and_bare_digits(tmp_path, capsys):
    from unrolled.cli import _named_paths, main

    for flag in ("--epochs", "--seeds", "--batch-size"):
        rc = main(["reproduce", "sulam-synthetic", "--quick", "--out", str(tmp_path), flag, "2"])
        err = capsys.readouterr().err
        assert rc == 2 and flag in err and len(err.strip().splitlines()) == 1
    assert _named_paths(["digits", "svhn=/x"]) == {"digits": None, "svhn": "/x"}
    with pytest.raises(ValueError, match="NAME=PATH"):
        _named_paths(["mnist"])
