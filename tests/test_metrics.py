import numpy as np
import pytest
import torch

from fewstep.metrics.distances import frechet_distance, kernel_distance, prdc


def test_frechet_matches_scipy_reference():
    from scipy import linalg

    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 6, generator=g) @ torch.randn(6, 6, generator=g)
    b = torch.randn(400, 6, generator=g) @ torch.randn(6, 6, generator=g) + 0.3
    x, y = a.double().numpy(), b.double().numpy()
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    ref = ((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-8)


def test_frechet_of_shifted_gaussians_is_the_squared_shift():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(200000, 3, generator=g)
    b = torch.randn(200000, 3, generator=g) + torch.tensor([1.0, 2.0, 0.0])
    assert frechet_distance(a, b) == pytest.approx(5.0, abs=0.05)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_kid_is_unbiased_near_zero_for_same_distribution():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(2000, 8, generator=g), torch.randn(2000, 8, generator=g)
    assert abs(kernel_distance(a, b)) < 0.01
    assert kernel_distance(a, b + 1.0) > 0.5


def test_prdc_extremes():
    g = torch.Generator().manual_seed(3)
    real = torch.randn(300, 4, generator=g)
    same = prdc(real, real.clone())
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    far = prdc(real, real + 100.0)
    assert far["precision"] == 0.0 and far["recall"] == 0.0 and far["coverage"] == 0.0
    # mode collapse onto 10 real points: precision stays perfect, recall and coverage collapse
    c = prdc(real, real[:10].repeat(30, 1))
    assert c["precision"] == 1.0 and c["recall"] < 0.1 and c["coverage"] < 0.3


def test_exact_metrics_on_true_samples():
    from fewstep.data.synthetic import MarkovMixture
    from fewstep.metrics.exact import exact_metrics

    dist = MarkovMixture()
    labels = torch.arange(20000) % dist.num_classes
    m = exact_metrics(dist, dist.sample(labels, torch.Generator().manual_seed(0)), labels)
    assert abs(m["nll_gap"]) < 0.1
    assert m["pair_kl"] < 0.01 and m["unigram_kl"] < 0.002
    uniform = torch.randint(0, dist.vocab_size, (20000, dist.length))
    assert exact_metrics(dist, uniform, labels)["pair_kl"] > 0.3


def test_evaluator_reference_features_are_cached_and_a_damaged_cache_is_rebuilt(monkeypatch):
    from fewstep.metrics import evaluator as E

    ev = E.get_evaluator("digits")  # trains or loads the classifier, writes the features file
    path = next((E.cache_dir() / "evaluators").glob("digits-*")) / "features.safetensors"
    assert path.is_file()
    fresh = ev.features_and_logits(ev.dataset.train_images)[0]
    calls = []
    real = E.Evaluator.features_and_logits
    monkeypatch.setattr(E.Evaluator, "features_and_logits", lambda self, x, **k: calls.append(len(x)) or real(self, x, **k))
    again = E._load_evaluator("digits", None)
    assert calls == [] and torch.allclose(again.train_features, fresh, atol=1e-5)
    assert again.test_features.shape == (len(ev.dataset.test_images), fresh.shape[1])
    path.write_bytes(b"not a safetensors file")
    assert torch.equal(again.train_features, ev.train_features)  # held in memory, not mapped from the damaged file
    rebuilt = E._load_evaluator("digits", None)
    assert calls == [len(ev.dataset.train_images), len(ev.dataset.test_images)]
    assert torch.allclose(rebuilt.train_features, fresh, atol=1e-5) and path.stat().st_size > 1000
    # one floor per n, shared by every seed block, and a caller cannot change it
    floor = rebuilt.real_floor(100)
    floor["fid"] = -1.0
    assert rebuilt.real_floor(100)["fid"] > 0 and len(calls) == 3


def test_evaluator_orders_real_noisy_and_shuffled_digits():
    from fewstep.metrics.evaluator import get_evaluator

    ev = get_evaluator("digits")
    assert ev.test_accuracy > 0.95
    ds = ev.dataset
    floor = ev.real_floor()
    g = torch.Generator().manual_seed(0)
    noisy = (ds.test_images + 0.2 * torch.randn(ds.test_images.shape, generator=g)).clamp(0, 1)
    shuffled = ds.test_images.flatten(1)[:, torch.randperm(64, generator=g)].view_as(ds.test_images)
    fids = [floor["fid"], ev.metrics(noisy, ds.test_labels)["fid"], ev.metrics(shuffled, ds.test_labels)["fid"]]
    assert fids[0] < fids[1] < fids[2]
    assert floor["class_acc"] == pytest.approx(ev.test_accuracy, abs=1e-6)
    # copies of training images sit at distance 0 from the training set; held-out digits do not
    assert ev.metrics(ds.train_images[:100])["train_nn"] == 0.0 and floor["train_nn"] > 1.0


def test_intra_fid_scores_each_class_against_its_own_training_images():
    from fewstep.metrics.evaluator import get_evaluator

    ev = get_evaluator("digits")
    ds = ev.dataset
    right = ev.metrics(ds.train_images, ds.train_labels)
    swapped = ev.metrics(ds.train_images, (ds.train_labels + 1) % ds.num_classes)  # every class drawn as the next
    assert right["fid"] == pytest.approx(swapped["fid"])  # the overall FID ignores labels
    assert right["intra_fid"] < 1e-6 < 100 < swapped["intra_fid"]  # the training images themselves: distance 0
    per = [swapped[f"fid_class_{c}"] for c in range(ds.num_classes)]
    assert swapped["intra_fid"] == pytest.approx(sum(per) / len(per))
    # 359 test images, about 36 per class: fewer than the 128 feature dimensions, so no intra-FID
    assert "intra_fid" not in ev.metrics(ds.test_images, ds.test_labels)
