import numpy as np
import pytest

from edgecap.core.calibration import CalibrationSpec, SparcState, sparc_update

SPEC = CalibrationSpec(alpha=1.1, beta=0.1, tau=1.5)


def run(steps, xp=np.asarray):
    state = SparcState()
    for a in steps:
        state = sparc_update(state, xp(a), SPEC)
    return state


def test_first_step_only_initialises_the_ema():
    state = run([[0.1, 0.2, 0.7]])
    np.testing.assert_allclose(state.ema, [0.1, 0.2, 0.7])
    np.testing.assert_array_equal(state.counts, [0, 0, 0])
    np.testing.assert_allclose(state.gain(SPEC, np.ones(3)), [1, 1, 1])


def test_update_on_hand_computed_numbers():
    # step 2: r = (0.3-0.1)/0.1 = 2.0 >= 1.5 selects token 0; r = 0 and -0.29 do not.
    # EMA = 0.9*a + 0.1*EMA = [0.28, 0.20, 0.52]
    state = run([[0.1, 0.2, 0.7], [0.3, 0.2, 0.5]])
    np.testing.assert_array_equal(state.counts, [1, 0, 0])
    np.testing.assert_allclose(state.ema, [0.28, 0.20, 0.52])
    np.testing.assert_allclose(state.gain(SPEC, np.ones(3)), [1.1, 1, 1])
    # step 3: token 0: (0.75-0.28)/0.28 = 1.68 -> selected again (alpha compounds);
    # token 1: (0.05-0.2)/0.2 < 0; token 2: (0.2-0.52)/0.52 < 0.
    state = sparc_update(state, np.array([0.75, 0.05, 0.2]), SPEC)
    np.testing.assert_array_equal(state.counts, [2, 0, 0])
    np.testing.assert_allclose(state.gain(SPEC, np.ones(3)), [1.21, 1, 1])
    np.testing.assert_allclose(state.ema, [0.9 * 0.75 + 0.028, 0.9 * 0.05 + 0.02, 0.9 * 0.2 + 0.052])


def test_threshold_is_inclusive_and_rows_are_independent():
    state = run([[[0.25, 0.25], [0.4, 0.125]], [[0.625, 0.25], [0.4, 0.375]]])  # r = 1.5 exactly; r = 2.0
    np.testing.assert_array_equal(state.counts, [[1, 0], [0, 1]])


def test_numpy_and_torch_follow_the_same_update():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    steps = rng.dirichlet(np.ones(16) * 0.3, size=(6, 3)).astype(np.float32)
    a = run(steps)
    b = run(steps, xp=torch.from_numpy)
    np.testing.assert_array_equal(a.counts, b.counts.numpy())
    np.testing.assert_allclose(a.ema, b.ema.numpy(), rtol=1e-6)
    assert a.counts.sum() > 0


def test_reorder_follows_beams():
    state = run([[[0.25, 0.25], [0.4, 0.125]], [[0.625, 0.25], [0.4, 0.375]]]).reorder(np.array([1, 1]))
    np.testing.assert_array_equal(state.counts, [[0, 1], [0, 1]])


def test_spec_layers_overrides_and_validation():
    spec = CalibrationSpec(selection_layer=-1, gain_layers=(0, -1))
    assert spec.resolve_selection_layer(4) == 3
    assert spec.layer_mask(4) == [True, False, False, True]
    assert CalibrationSpec().layer_mask(2) == [True, True]
    changed = SPEC.with_overrides("alpha=1.3, tau=2,selection_layer=1")
    assert (changed.alpha, changed.tau, changed.selection_layer, changed.beta) == (1.3, 2.0, 1, 0.1)
    assert CalibrationSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="unknown calibration setting"):
        SPEC.with_overrides("gamma=1")
    with pytest.raises(ValueError):
        CalibrationSpec(beta=1.0)
    with pytest.raises(ValueError):
        CalibrationSpec(selection_layer=5).resolve_selection_layer(3)
