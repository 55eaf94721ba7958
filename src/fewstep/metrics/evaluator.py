"""Per-dataset evaluator: a classifier fewstep trains deterministically and caches, plus its reference features.

FID here is NOT Inception FID: it is the Frechet distance in this classifier's 128-d penultimate
features (no Inception weights exist offline). Compare numbers only with other fewstep numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from fewstep.checkpoint import load_weights, read_tensors, save_weights, write_json_atomic, write_tensors_atomic
from fewstep.data import Dataset, load_dataset
from fewstep.errors import FewstepError
from fewstep.metrics.distances import frechet_distance, kernel_distance, prdc
from fewstep.models.classifier import ClassifierConfig, FeatureClassifier
from fewstep.runlog import progress, say

EVALUATOR_VERSION = 1
# epochs chosen so each evaluator trains in under ~3 minutes on 2 CPU cores
EPOCHS = {"digits": 40, "mnist": 15, "fashion_mnist": 4}


def cache_dir() -> Path:
    return Path(os.environ.get("FEWSTEP_CACHE", Path.home() / ".cache" / "fewstep"))


@dataclass
class Evaluator:
    dataset: Dataset
    net: FeatureClassifier
    test_accuracy: float
    train_features: torch.Tensor
    test_features: torch.Tensor
    _floors: dict = field(default_factory=dict, repr=False)

    @torch.no_grad()
    def features_and_logits(self, images: torch.Tensor, batch: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
        feats, logits = [], []
        for i in range(0, len(images), batch):
            f = self.net.features(images[i:i + batch].float())
            feats.append(f)
            logits.append(self.net.head(f))
        return torch.cat(feats), torch.cat(logits)

    def metrics(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        """FID/KID vs the train split, PRDC vs an equal-size train subset, class accuracy vs `labels`, and
        train_nn: the median distance from a sample to its nearest training image."""
        if images.shape[1:] != self.dataset.train_images.shape[1:]:
            raise FewstepError(f"images of shape {tuple(images.shape[1:])} do not match dataset "
                               f"'{self.dataset.name}' {tuple(self.dataset.train_images.shape[1:])}")
        feats, logits = self.features_and_logits(images)
        out = {"fid": frechet_distance(feats, self.train_features),
               "kid": kernel_distance(feats, self.train_features)}
        g = torch.Generator().manual_seed(0)
        ref = self.train_features[torch.randperm(len(self.train_features), generator=g)[: len(feats)]]
        out.update(prdc(ref, feats))
        out["train_nn"] = nearest_distance(feats, self.train_features).median().item()
        if labels is not None:
            out["class_acc"] = float((logits.argmax(1) == labels.to(logits.device)).float().mean())
            out.update(self.class_fids(feats, labels))
        out["n"] = len(images)
        return out

    def class_fids(self, feats: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Intra-FID (Miyato & Koyama, ICLR 2018): each class's samples against that class's training images
        ('fid_class_<c>'), and their mean ('intra_fid'). The overall FID can hide one bad class, and MSD's students
        each own classes. Empty unless every class has more samples than feature dimensions (else its covariance is
        singular): 10 classes in 128-d need n >= 1,290."""
        labels = labels.to(feats.device)
        ds = self.dataset
        if torch.bincount(labels, minlength=ds.num_classes).min() <= feats.shape[1]:
            return {}
        per = {f"fid_class_{c}": frechet_distance(feats[labels == c], self.train_features[ds.train_labels == c])
               for c in range(ds.num_classes)}
        return {"intra_fid": sum(per.values()) / len(per), **per}

    def real_floor(self, n: int | None = None) -> dict[str, float]:
        """The same metrics for real test images vs the train split: what a perfect generator would score."""
        ds = self.dataset
        n = min(n or len(ds.test_images), len(ds.test_images))
        if n not in self._floors:  # a fixed subset: every seed block of an eval shares it
            g = torch.Generator().manual_seed(1)
            idx = torch.randperm(len(ds.test_images), generator=g)[:n]
            self._floors[n] = self.metrics(ds.test_images[idx], ds.test_labels[idx])
        return dict(self._floors[n])


def nearest_distance(a: torch.Tensor, b: torch.Tensor, chunk: int = 500) -> torch.Tensor:
    """For each row of a, the Euclidean distance to its nearest row of b (a memorisation check when b is the
    training set: held-out real images give the level of a generator that does not copy)."""
    return torch.cat([torch.cdist(a[i:i + chunk], b, compute_mode="donot_use_mm_for_euclid_dist").min(1).values
                      for i in range(0, len(a), chunk)])


def fingerprint(ds: Dataset) -> str:
    """Content hash, so a dataset read from another --data-dir never reuses a wrong cached evaluator."""
    h = hashlib.sha1()
    for t in (ds.train_labels, ds.test_labels, ds.train_images[:: max(1, len(ds.train_images) // 64)]):
        h.update(t.contiguous().numpy().tobytes())
    h.update(str(tuple(ds.train_images.shape)).encode())
    return h.hexdigest()[:10]


def _train_classifier(ds: Dataset, seed: int = 0) -> tuple[FeatureClassifier, float]:
    torch.manual_seed(seed)
    cfg = ClassifierConfig(in_channels=ds.train_images.shape[1], image_size=ds.train_images.shape[-1],
                           num_classes=ds.num_classes)
    net = FeatureClassifier(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = ds.train_images, ds.train_labels
    epochs, bs = EPOCHS.get(ds.name, 10), min(128, len(x))
    steps = epochs * (len(x) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    bar = progress(steps, desc=f"evaluator[{ds.name}]")
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(len(x) // bs):
            idx = perm[i * bs:(i + 1) * bs]
            # 1-pixel random shifts: features that do not hinge on exact positions
            xb = x[idx]
            shift = torch.randint(-1, 2, (2,), generator=g)
            xb = torch.roll(xb, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
    bar.close()
    net.eval()
    with torch.no_grad():
        acc = float(torch.cat([net(ds.test_images[i:i + 2000]).argmax(1) for i in range(0, len(ds.test_images), 2000)])
                    .eq(ds.test_labels).float().mean())
    return net, acc


@lru_cache(maxsize=4)
def get_evaluator(name: str, data_dir: str | None = None) -> Evaluator:
    """Load the cached evaluator for a dataset, training (deterministically) and caching it on first use.

    Memoised per process; never draws from the global RNG.
    """
    with torch.random.fork_rng(devices=[]):
        return _load_evaluator(name, data_dir)


def _load_evaluator(name: str, data_dir: str | None) -> Evaluator:
    ds = load_dataset(name, data_dir)
    if not ds.has_images:
        raise FewstepError(f"dataset '{name}' has no images; use the exact metrics (fewstep eval handles this)")
    folder = cache_dir() / "evaluators" / f"{name}-v{EVALUATOR_VERSION}-{fingerprint(ds)}"
    info_file = folder / "info.json"
    if info_file.is_file():
        info = json.loads(info_file.read_text())
        net = FeatureClassifier.from_config_dict(info["config"])
        load_weights(net, folder / "classifier.safetensors")
        net.eval().requires_grad_(False)
        acc = info["test_accuracy"]
    else:
        say(f"training the '{name}' evaluator classifier (once; cached in {folder})")
        net, acc = _train_classifier(ds)
        net.requires_grad_(False)
        folder.mkdir(parents=True, exist_ok=True)
        save_weights(net, folder / "classifier.safetensors")
        write_json_atomic(info_file, {"config": net.spec()["config"], "test_accuracy": acc, "dataset": name,
                                      "version": EVALUATOR_VERSION})
        say(f"evaluator test accuracy on '{name}': {acc:.4f}")
    ev = Evaluator(ds, net, acc, torch.empty(0), torch.empty(0))
    ev.train_features, ev.test_features = _reference_features(ev, folder / "features.safetensors")
    return ev


def _reference_features(ev: Evaluator, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The train and test split's features, cached beside the classifier: on fashion_mnist (70,000 images) computing
    them costs more than scoring a one-step student's samples."""
    ds = ev.dataset
    if path.is_file():
        try:
            t = read_tensors(path)
            if t["train"].shape[0] == len(ds.train_images) and t["test"].shape[0] == len(ds.test_images):
                # copies: the loaded tensors map the file, and a later rewrite of it in place would crash this process
                return t["train"].clone(), t["test"].clone()
        except (FewstepError, KeyError):
            pass  # damaged or foreign: recompute and overwrite below
    train, test = ev.features_and_logits(ds.train_images)[0], ev.features_and_logits(ds.test_images)[0]
    write_tensors_atomic(path, {"train": train, "test": test})
    return train, test
