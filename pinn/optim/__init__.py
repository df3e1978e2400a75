"""Optimizers: Adam with warm-up and decay, and quasi-Newton refinement (L-BFGS, dense BFGS,
self-scaled BFGS and self-scaled Broyden) run in blocks compiled once. See the submodules."""

from pinn.optim.adam import adam, learning_rate_schedule, should_switch
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
    "adam", "inverse_hessian_update", "lbfgs", "learning_rate_schedule", "qn_block", "qn_reset_cache",
    "quasi_newton_runner", "refine_optimizer", "run_quasi_newton", "scale_by_dense_quasi_newton",
    "self_scaled_coefficients", "should_switch", "ssbroyden",
    "DENSE_MAX_PARAMS", "InverseHessianUpdate", "apply_update", "apply_update_to_vector", "check_dense_size",
    "identity_update", "self_scaled_update",
]
