"""Optimizers, built from plain hyperparameters (optax-style): Adam with warm-up, decay and a
learning-rate scale in its state, and quasi-Newton refinement (L-BFGS, dense BFGS, self-scaled BFGS
and self-scaled Broyden) run in blocks compiled once. See the submodules; params.yaml is mapped
onto them by `pinn.from_params`."""

from pinn.optim.adam import (LR_SCALE, adam, learning_rate_schedule, lr_scale_of, scale_updates,
                             should_switch, with_lr_scale)
from pinn.optim.quasi_newton import (
    CONVERGED,
    IDLE,
    RESTARTED,
    STEPPED,
    STOPPED,
    QuasiNewtonBlockInfo,
    QuasiNewtonRunner,
    lbfgs,
    qn_block,
    qn_reset_cache,
    quasi_newton_runner,
    refine_optimizer,
    run_quasi_newton,
)
from pinn.optim.ssbroyden import (
    DENSE_MAX_PARAMS,
    InverseHessianUpdate,
    ScaleByDenseQuasiNewtonState,
    SelfScaledCoefficients,
    apply_update,
    apply_update_to_vector,
    check_dense_size,
    identity_update,
    inverse_hessian_update,
    scale_by_dense_quasi_newton,
    self_scaled_coefficients,
    self_scaled_update,
    ssbroyden,
)

__all__ = [
    "CONVERGED", "IDLE", "RESTARTED", "STEPPED", "STOPPED",
    "QuasiNewtonBlockInfo", "QuasiNewtonRunner", "ScaleByDenseQuasiNewtonState", "SelfScaledCoefficients",
    "LR_SCALE", "adam", "lr_scale_of", "scale_updates", "with_lr_scale",
    "inverse_hessian_update", "lbfgs", "learning_rate_schedule", "qn_block", "qn_reset_cache",
    "quasi_newton_runner", "refine_optimizer", "run_quasi_newton", "scale_by_dense_quasi_newton",
    "self_scaled_coefficients", "should_switch", "ssbroyden",
    "DENSE_MAX_PARAMS", "InverseHessianUpdate", "apply_update", "apply_update_to_vector", "check_dense_size",
    "identity_update", "self_scaled_update",
]
