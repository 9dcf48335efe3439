"""SPARC calibration: the one spec and state update shared by export/ and the runtime.

Selective Progressive Attention ReCalibration (arXiv 2502.01419). At every decoding
step the head-mean attention a_t of the newest query over the visual tokens, taken in
one *selection layer*, is compared with an exponential moving average of earlier steps:

    r_t = (a_t - A_{t-1}) / A_{t-1}            selected where r_t >= tau
    A_t = (1 - beta) * a_t + beta * A_{t-1}     (A initialised from the first step)

Each time a visual token is selected its value vector is scaled by alpha in every
calibrated layer from the next step on, so a token selected k times carries alpha**k.

The update below uses only arithmetic operators, so the very same function runs on
numpy arrays in the runtime and on torch tensors in the export-time reference
generate loop.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class CalibrationSpec:
    alpha: float = 1.1
    beta: float = 0.1
    tau: float = 1.5
    selection_layer: int = -1  # index into decoder layers; negative counts from the end
    gain_layers: tuple[int, ...] | None = None  # None = every layer attending to the image

    def __post_init__(self):
        if not self.alpha > 0:
            raise ValueError(f"SPARC alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.beta < 1.0:
            raise ValueError(f"SPARC beta must be in [0, 1), got {self.beta}")
        if self.gain_layers is not None:
            object.__setattr__(self, "gain_layers", tuple(int(i) for i in self.gain_layers))

    def resolve_selection_layer(self, n_layers: int) -> int:
        layer = self.selection_layer if self.selection_layer >= 0 else n_layers + self.selection_layer
        if not 0 <= layer < n_layers:
            raise ValueError(f"selection layer {self.selection_layer} outside 0..{n_layers - 1}")
        return layer

    def layer_mask(self, n_layers: int) -> list[bool]:
        """Which decoder layers get the visual gain."""
        if self.gain_layers is None:
            return [True] * n_layers
        chosen = {i if i >= 0 else n_layers + i for i in self.gain_layers}
        return [i in chosen for i in range(n_layers)]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gain_layers"] = list(self.gain_layers) if self.gain_layers is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CalibrationSpec":
        known = {k: d[k] for k in ("alpha", "beta", "tau", "selection_layer", "gain_layers") if k in d}
        if known.get("gain_layers") is not None:
            known["gain_layers"] = tuple(known["gain_layers"])
        return cls(**known)

    def with_overrides(self, text: str) -> "CalibrationSpec":
        """Apply 'alpha=1.2,tau=2' style overrides (CLI)."""
        changes: dict[str, Any] = {}
        for item in filter(None, (p.strip() for p in text.split(","))):
            key, _, value = item.partition("=")
            key = key.strip()
            if key in ("alpha", "beta", "tau"):
                changes[key] = float(value)
            elif key == "selection_layer":
                changes[key] = int(value)
            elif key == "gain_layers":
                changes[key] = tuple(int(v) for v in value.split("+") if v)
            else:
                raise ValueError(f"unknown calibration setting {key!r} (alpha, beta, tau, selection_layer, gain_layers)")
        return replace(self, **changes)


@dataclass
class SparcState:
    """Per-row calibration state. Arrays are (rows, n_visual), numpy or torch."""

    ema: Any = None  # None until the first step has been seen
    counts: Any = None

    def gain(self, spec: CalibrationSpec, ones):
        """Gain on each visual token's value vector for the next step (alpha**count)."""
        if self.counts is None:
            return ones
        return spec.alpha ** self.counts

    def reorder(self, index) -> "SparcState":
        """Follow beam-search reordering of rows."""
        if self.ema is None:
            return self
        return SparcState(ema=self.ema[index], counts=self.counts[index])


def sparc_update(state: SparcState, attention, spec: CalibrationSpec) -> SparcState:
    """Advance the state with this step's head-mean visual attention (rows, n_visual).

    The first call only initialises the EMA (no selection), as the reference does for
    the prefill step. Later calls select tokens whose relative activation reaches tau,
    count them, then update the EMA.
    """
    if state.ema is None:
        return SparcState(ema=attention * 1.0, counts=attention * 0.0)
    relative = (attention - state.ema) / state.ema
    selected = relative >= spec.tau
    counts = state.counts + selected
    ema = (1.0 - spec.beta) * attention + spec.beta * state.ema
    return SparcState(ema=ema, counts=counts)
