"""Samplers: pure functions over a network (gaussian: EDM denoisers; masked: masked-token models)."""


def check_cfg_scale(scale: float, name: str = "cfg") -> None:
    """Guidance scales below 0 push samples away from their class: never what a user meant."""
    if not scale >= 0.0:
        raise ValueError(f"{name} must be >= 0 (1 = no guidance, 0 = the unconditional model), got {scale}")
