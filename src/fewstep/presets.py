"""Named starting configs per (method, dataset): plain dicts, overridden by --config files and key=value pairs."""

from __future__ import annotations

PRESETS: dict[tuple[str, str], dict] = {
    ("maskgit", "digits"): {
        "method": {"dim": 128, "depth": 4, "heads": 4, "dropout": 0.1, "sample_steps": 16, "sample_cfg": 1.25,
                   "sample_cfg_ramp": "linear"},
        "train": {"steps": 6000, "batch_size": 128, "lr": 5e-4, "warmup_steps": 200, "weight_decay": 0.01,
                  "lr_schedule": "cosine", "ema_decay": 0.999, "ckpt_every": 1000},
    },
    ("maskgit", "synthetic"): {
        "method": {"dim": 128, "depth": 4, "heads": 4, "dropout": 0.0, "label_smoothing": 0.0},
        "train": {"steps": 3000, "batch_size": 256, "lr": 5e-4, "warmup_steps": 100, "ckpt_every": 1000},
    },
    ("maskgit", "synthetic_small"): {
        "method": {"dim": 32, "depth": 2, "heads": 2, "dropout": 0.0, "label_smoothing": 0.0, "sample_cfg": 1.0,
                   "sample_remask": "random", "schedule": "arccos"},
        "train": {"steps": 1500, "batch_size": 128, "lr": 2e-3, "warmup_steps": 20, "lr_schedule": "cosine",
                  "ckpt_every": 500},
    },
    ("maskgit", "fashion_mnist"): {
        "method": {"dim": 128, "depth": 4, "heads": 4, "dropout": 0.1, "sample_steps": 16, "sample_cfg": 1.25,
                   "sample_cfg_ramp": "linear"},
        "train": {"steps": 12000, "batch_size": 128, "lr": 5e-4, "warmup_steps": 300, "weight_decay": 0.01,
                  "lr_schedule": "cosine", "ema_decay": 0.999, "ckpt_every": 1000},
    },
    ("maskgit", "mnist"): {
        "method": {"dim": 192, "depth": 6, "heads": 6, "dropout": 0.1},
        "train": {"steps": 8000, "batch_size": 128, "lr": 5e-4, "warmup_steps": 200, "weight_decay": 0.01,
                  "ckpt_every": 1000},
    },
    ("vq", "fashion_mnist"): {"train": {"steps": 3000, "batch_size": 64, "lr": 1e-3, "warmup_steps": 100,
                                        "lr_schedule": "cosine", "grad_clip": None, "ckpt_every": 500}},
    ("vq", "mnist"): {"train": {"steps": 3000, "batch_size": 64, "lr": 1e-3, "warmup_steps": 100,
                                "lr_schedule": "cosine", "grad_clip": None, "ckpt_every": 500}},
}


# DiMO on images: aux:generator 3:1, a cosine LR, and the teacher guided far less than the official 2.0, see
# docs/DIMO.md "Why the small presets deviate"
_DIMO_METHOD = {"teacher_cfg": 1.25, "r_init": 0.6, "sigma_init": 0.1, "aux_updates": 3, "sample_temperature": 0.1}
_DIMO_TRAIN = {"batch_size": 64, "lr": 3e-4, "lr_schedule": "cosine", "warmup_steps": 50, "ema_decay": 0.99,
               "grad_clip": 1.0, "log_every": 10}
PRESETS.update({
    # unguided (CFG 1) with sigma_init 0 for 300 steps, then 500 gentle steps at the teacher's CFG 1.25: one-step
    # FID 8.7 and class accuracy 0.976 against the 16-step teacher's 9.8 and 0.966 (n = 4,000, 6 seed blocks).
    # sigma_init 0.1 needed 6,000 steps for 9.4 and 0.931 (docs/BENCHMARKS.md)
    ("dimo", "digits"): {"method": {**_DIMO_METHOD, "teacher_cfg": 1.0, "sigma_init": 0.0},
                         "train": {**_DIMO_TRAIN, "steps": 300, "ckpt_every": 100},
                         "finetune": {"method": {"teacher_cfg": 1.25},
                                      "train": {"steps": 500, "lr": 3e-5, "lr_schedule": "constant"}}},
    # teacher_temp 0.9: the temperature at which this teacher, sampled as DiMO teaches (random order), scores best;
    # 1,500 steps and tau_gen 1.0 match the teacher's 16-step FID (docs/BENCHMARKS.md)
    ("dimo", "fashion_mnist"): {"method": {**_DIMO_METHOD, "teacher_temp": 0.9, "sample_temperature": 1.0},
                                "train": {**_DIMO_TRAIN, "steps": 1500, "ckpt_every": 250}},
    ("dimo", "synthetic_small"): {
        "method": {"teacher_cfg": 1.0},
        "train": {"steps": 200, "batch_size": 128, "lr": 3e-4, "warmup_steps": 10, "ema_decay": 0.9,
                  "ckpt_every": 100},
    },
    ("dimo", "synthetic"): {
        "train": {"steps": 300, "batch_size": 128, "lr": 2e-4, "warmup_steps": 20, "ema_decay": 0.99,
                  "ckpt_every": 100},
    },
})

PRESETS.update({
    # dropout 0.13 (EDM's CIFAR-10 value): with 1,437 training digits the teacher otherwise stays close to them,
    # and DMD2 students of the dropout teacher score FID 2.8 against 4.5 (n = 4,000, BENCHMARKS.md)
    ("edm", "digits"): {
        "method": {"channels": [32, 64], "sample_steps": 18, "dropout": 0.13},
        "train": {"steps": 8000, "batch_size": 128, "lr": 5e-4, "warmup_steps": 200, "lr_schedule": "cosine",
                  "ema_decay": 0.999, "ckpt_every": 1000},
    },
    ("edm", "fashion_mnist"): {
        "method": {"channels": [32, 64, 64], "sample_steps": 18},
        "train": {"steps": 15000, "batch_size": 128, "lr": 5e-4, "warmup_steps": 500, "lr_schedule": "cosine",
                  "ema_decay": 0.9995, "ckpt_every": 1000},
    },
    ("edm", "ring2d"): {
        "method": {"mlp_hidden": 256, "mlp_depth": 3, "sample_steps": 35},
        "train": {"steps": 8000, "batch_size": 512, "lr": 1e-3, "warmup_steps": 200, "lr_schedule": "cosine",
                  "ema_decay": 0.999, "ckpt_every": 2000},
    },
})
# DMD2 and each MSD student share one recipe per dataset (MSD inherits DMD2's hyper-parameters, §4)
_DMD2 = {
    # GAN weights 3e-2 rather than ImageNet's 3e-3 / 1e-2: FID 4.5 against 7.4 after 2,000 steps. Batch 128 for 1,000
    # steps rather than 64 for 2,000 (same compute): 2.5-2.6 against 2.8, two seeds (n = 4,000, BENCHMARKS.md)
    "digits": {"method": {"gan_weight_gen": 3e-2, "gan_weight_critic": 3e-2},
               "train": {"steps": 1000, "batch_size": 128, "lr": 1e-4, "warmup_steps": 100, "grad_clip": 10.0,
                         "ema_decay": 0.99, "ckpt_every": 250, "log_every": 25}},
    "fashion_mnist": {"train": {"steps": 2000, "batch_size": 64, "lr": 1e-4, "warmup_steps": 100, "grad_clip": 10.0,
                                "ema_decay": 0.99, "ckpt_every": 500, "log_every": 25}},
    "ring2d": {"train": {"steps": 1600, "batch_size": 256, "lr": 1e-4, "warmup_steps": 100, "grad_clip": 10.0,
                         "ema_decay": 0.99, "ckpt_every": 400}},
}
for _data, _p in _DMD2.items():
    PRESETS[("dmd2", _data)] = _p
    # TSM for smaller students, before train.steps: the paper runs 2-5k steps; 500 left digits students collapsed
    PRESETS[("msd", _data)] = {**_p, "method": {**_p.get("method", {}), "tsm_steps": 4000}}


def preset(method: str, dataset: str) -> dict:
    return PRESETS.get((method, dataset), {})
