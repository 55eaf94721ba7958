"""A discrete token distribution with exact probabilities: a mixture of per-class Markov chains.

Each class c has an initial distribution pi_c over V tokens and a transition matrix A_c; a sequence of
length L is x_1 ~ pi_c, x_i ~ A_c[x_{i-1}]. Everything a test or benchmark needs is exact: log p(x|c),
the entropy, all pair marginals, and the posterior p(x_i | observed tokens, c) of a masked sequence
(forward-backward), which makes a perfect masked-diffusion "teacher" for checking samplers.
"""

from __future__ import annotations

import numpy as np
import torch

from fewstep.data.base import Dataset


class MarkovMixture:
    def __init__(self, num_classes: int = 4, vocab_size: int = 8, length: int = 16, seed: int = 0,
                 concentration: float = 0.3):
        rng = np.random.RandomState(seed)
        self.num_classes, self.vocab_size, self.length = num_classes, vocab_size, length
        init = rng.dirichlet(np.ones(vocab_size), size=num_classes)
        trans = rng.dirichlet(np.full(vocab_size, concentration), size=(num_classes, vocab_size))
        # keep every probability strictly positive so log p is finite everywhere
        init = (init + 1e-3) / (init + 1e-3).sum(-1, keepdims=True)
        trans = (trans + 1e-3) / (trans + 1e-3).sum(-1, keepdims=True)
        self.init = torch.from_numpy(init)  # (C, V) float64
        self.trans = torch.from_numpy(trans)  # (C, V, V) float64, rows = previous token

    def sample(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n = len(labels)
        x = torch.empty(n, self.length, dtype=torch.long)
        x[:, 0] = torch.multinomial(self.init[labels], 1, generator=generator).squeeze(1)
        for i in range(1, self.length):
            rows = self.trans[labels, x[:, i - 1]]
            x[:, i] = torch.multinomial(rows, 1, generator=generator).squeeze(1)
        return x

    def log_prob(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x, labels = x.long().cpu(), labels.long().cpu()
        lp = self.init[labels, x[:, 0]].log()
        for i in range(1, self.length):
            lp = lp + self.trans[labels, x[:, i - 1], x[:, i]].log()
        return lp

    def marginals(self, c: int) -> torch.Tensor:
        """(L, V) exact single-position marginals of class c."""
        m = [self.init[c]]
        for _ in range(1, self.length):
            m.append(m[-1] @ self.trans[c])
        return torch.stack(m)

    def pair_marginals(self, c: int) -> torch.Tensor:
        """(L, L, V, V): P(x_i = a, x_j = b | c) for i < j (entries with i >= j are zero)."""
        L, V = self.length, self.vocab_size
        m = self.marginals(c)
        out = torch.zeros(L, L, V, V, dtype=torch.float64)
        powers = [torch.eye(V, dtype=torch.float64)]
        for _ in range(1, L):
            powers.append(powers[-1] @ self.trans[c])
        for i in range(L):
            for j in range(i + 1, L):
                out[i, j] = m[i][:, None] * powers[j - i]
        return out

    def entropy(self, c: int) -> float:
        """H(x | c) in nats = H(x_1) + sum_i E[H(A_c[x_{i-1}])]."""
        m = self.marginals(c)
        h_rows = -(self.trans[c] * self.trans[c].log()).sum(-1)
        h = -(self.init[c] * self.init[c].log()).sum()
        for i in range(1, self.length):
            h = h + (m[i - 1] * h_rows).sum()
        return float(h)

    def posterior(self, tokens: torch.Tensor, labels: torch.Tensor, mask_id: int) -> torch.Tensor:
        """(N, L, V) exact p(x_i = v | unmasked tokens, c) by forward-backward (deltas at unmasked positions)."""
        tokens, labels = tokens.long().cpu(), labels.long().cpu()
        n, L, V = tokens.shape[0], self.length, self.vocab_size
        observed = tokens != mask_id
        emit = torch.ones(n, L, V, dtype=torch.float64)
        obs_one_hot = torch.nn.functional.one_hot(tokens.clamp(max=V - 1), V).double()
        emit = torch.where(observed[..., None], obs_one_hot, emit)
        A = self.trans[labels]  # (N, V, V)
        alpha = torch.empty(n, L, V, dtype=torch.float64)
        a = self.init[labels] * emit[:, 0]
        alpha[:, 0] = a / a.sum(-1, keepdim=True)
        for i in range(1, L):
            a = torch.einsum("nu,nuv->nv", alpha[:, i - 1], A) * emit[:, i]
            alpha[:, i] = a / a.sum(-1, keepdim=True)
        beta = torch.ones(n, L, V, dtype=torch.float64)
        for i in range(L - 2, -1, -1):
            b = torch.einsum("nuv,nv->nu", A, emit[:, i + 1] * beta[:, i + 1])
            beta[:, i] = b / b.sum(-1, keepdim=True)
        post = alpha * beta
        return post / post.sum(-1, keepdim=True)


class ExactTeacher(torch.nn.Module):
    """A perfect masked-diffusion network for a MarkovMixture: logits = log p(x_0^i | x_t, c)."""

    def __init__(self, dist: MarkovMixture):
        super().__init__()
        self.dist = dist
        self.vocab_size, self.seq_len, self.num_classes = dist.vocab_size, dist.length, dist.num_classes
        self.mask_id = dist.vocab_size
        self.register_buffer("_device_anchor", torch.zeros(()))

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor, **_: object) -> torch.Tensor:
        # a dropped label (== num_classes) means "unconditional": average the classes' posteriors uniformly
        drop = labels >= self.num_classes
        lab = labels.clamp(max=self.num_classes - 1)
        post = self.dist.posterior(tokens, lab, self.mask_id)
        if drop.any():
            mix = torch.stack([self.dist.posterior(tokens[drop], torch.full((int(drop.sum()),), c), self.mask_id)
                               for c in range(self.num_classes)]).mean(0)
            post[drop] = mix
        return post.clamp_min(1e-30).log().float().to(tokens.device)


def load_synthetic(data_dir: str | None = None, num_train: int = 20000, num_test: int = 5000,
                   dist: MarkovMixture | None = None, name: str = "synthetic") -> Dataset:
    dist = dist or MarkovMixture()
    g = torch.Generator().manual_seed(1234)
    y_tr = torch.randint(0, dist.num_classes, (num_train,), generator=g)
    y_te = torch.randint(0, dist.num_classes, (num_test,), generator=g)
    return Dataset(
        name=name, num_classes=dist.num_classes, class_names=[f"chain{c}" for c in range(dist.num_classes)],
        train_labels=y_tr, test_labels=y_te,
        train_tokens=dist.sample(y_tr, g), test_tokens=dist.sample(y_te, g),
        vocab_size=dist.vocab_size, token_grid=(dist.length,), exact=dist, default_tokenizer="identity",
    )


def load_synthetic_small(data_dir: str | None = None) -> Dataset:
    """2 classes, 4 tokens, length 8: a teacher learns it in seconds on one CPU core (tests, quick benchmarks)."""
    return load_synthetic(num_train=8000, num_test=2000, dist=MarkovMixture(2, 4, 8), name="synthetic_small")
