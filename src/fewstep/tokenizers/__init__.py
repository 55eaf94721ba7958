"""Tokenizers turn images into token grids and back.

identity: datasets whose values already are tokens (digits' 17 grey levels; synthetic chains).
vq:       a VQ autoencoder trained by `fewstep train tokenizer`, referenced by its run folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fewstep.data import Dataset, load_dataset
from fewstep.errors import FewstepError


@dataclass
class DataConfig:
    name: str = "digits"
    data_dir: str | None = None
    tokenizer: str | None = None  # 'identity', a tokenizer run folder, or None for the dataset's default


class IdentityTokenizer:
    kind = "identity"

    def __init__(self, dataset: Dataset):
        if dataset.vocab_size is None:
            raise FewstepError(
                f"dataset '{dataset.name}' has no native tokens; train a VQ tokenizer "
                f"(fewstep train tokenizer --data {dataset.name}) and pass data.tokenizer=<its run folder>"
            )
        self.vocab_size = dataset.vocab_size
        self.grid = dataset.token_grid
        self.levels = dataset.vocab_size - 1
        self.has_images = dataset.has_images

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return torch.round(images.clamp(0, 1) * self.levels).long().flatten(1)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor | None:
        if not self.has_images:
            return None
        return (tokens.float() / self.levels).clamp(0, 1).view(-1, 1, *self.grid)

    def spec(self) -> dict:
        return {"kind": "identity"}


class VQTokenizer:
    kind = "vq"

    def __init__(self, path: str | Path, device: torch.device | str = "cpu"):
        from fewstep.runs import load_run

        run = load_run(path, device=device)
        if "tokenizer" not in run.nets:
            raise FewstepError(f"'{path}' is not a tokenizer run (no 'tokenizer' network); "
                               "create one with: fewstep train tokenizer --data <dataset> --out <folder>")
        self.path = str(run.path)
        self.model = run.nets["tokenizer"].eval()
        self.vocab_size = self.model.cfg.codebook_size
        self.grid = self.model.grid
        self.dataset = run.config["data"]["name"]

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch: int = 1000) -> torch.Tensor:
        dev = next(self.model.parameters()).device
        return torch.cat([self.model.encode(images[i:i + batch].to(dev)).cpu() for i in range(0, len(images), batch)])

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, batch: int = 1000) -> torch.Tensor:
        dev = next(self.model.parameters()).device
        return torch.cat([self.model.decode(tokens[i:i + batch].to(dev)).cpu() for i in range(0, len(tokens), batch)])

    def spec(self) -> dict:
        return {"kind": "vq", "path": self.path}


def resolve_tokenizer(data_cfg: DataConfig) -> IdentityTokenizer | VQTokenizer:
    dataset = load_dataset(data_cfg.name, data_cfg.data_dir)
    choice = data_cfg.tokenizer or dataset.default_tokenizer
    if choice == "identity":
        return IdentityTokenizer(dataset)
    if choice == "vq":
        raise FewstepError(
            f"dataset '{dataset.name}' needs a VQ tokenizer: run 'fewstep train tokenizer --data {dataset.name} "
            f"--out runs/tokenizer_{dataset.name}' and pass data.tokenizer=runs/tokenizer_{dataset.name}"
        )
    tok = VQTokenizer(choice)
    if tok.dataset != dataset.name:
        raise FewstepError(f"tokenizer '{choice}' was trained on '{tok.dataset}', not on '{dataset.name}'")
    return tok


def tokenizer_from_spec(spec: dict, dataset: Dataset) -> IdentityTokenizer | VQTokenizer:
    if spec["kind"] == "identity":
        return IdentityTokenizer(dataset)
    return VQTokenizer(spec["path"])


def tokenized_split(dataset: Dataset, tokenizer, split: str = "train") -> torch.Tensor:
    """Token ids of a split: the native tokens for identity tokenizers, else encoded images."""
    native = dataset.train_tokens if split == "train" else dataset.test_tokens
    if tokenizer.kind == "identity" and native is not None:
        return native
    images = dataset.train_images if split == "train" else dataset.test_images
    return tokenizer.encode(images)
