"""pinn: accurate, fast, reproducible physics-informed neural networks in JAX.

The pipeline (dvc.yaml) runs the stages of `pinn.stages`; the components they compose live in
the modules of this package (see docs/architecture.md). The user API is re-exported here:

    import pinn

    class KdV(pinn.Problem): ...                        # a PDE in your own file (docs/architecture.md)
    cfg = pinn.load_params("params.yaml")              # validated params (pinn.config)
    root = pinn.make_project("runs/kdv", "examples/kdv/params.yaml")
    pinn.repro(root)                                   # the pipeline through DVC

The names are resolved on first use (PEP 562), so `import pinn` loads nothing else and a stage,
which imports the modules it uses directly, depends on those modules only (dvc.yaml's deps are
the import closure of each stage: tests/test_stage_contracts.py).
"""

from __future__ import annotations

from importlib import import_module
from importlib.util import find_spec
from typing import Any

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # a problem: the user's class (conditions, bounds, geometry) and the built-in names
    **{name: "pinn.problems" for name in (
        "Problem", "Box", "Bound", "Initial", "Dirichlet", "Neumann", "Periodic", "Observation",
        "Condition", "make_problem", "load_problem_class")},
    # params
    **{name: "pinn.config" for name in ("Params", "ConfigError", "load_params", "validate_params")},
    # components, optax-style (init/update over pytree state, plain hyperparameters), and the network
    **{name: "pinn.sampling" for name in ("uniform", "rad", "rar_d", "hard_bank",
                                          "collocation_points")},
    **{name: "pinn.balancing" for name in ("fixed", "gradnorm", "grad_ratio", "CausalWeighting",
                                           "causal_residual_loss")},
    "adam": "pinn.optim",
    "loss_spec": "pinn.loss",
    # params.yaml -> those components (the one module that reads the schema for them)
    **{name: "pinn.from_params" for name in ("sampler_from_params", "balancer_from_params",
                                             "adam_from_params", "loss_from_params")},
    **{name: "pinn.models" for name in ("PINN", "make_model")},
    "Trainer": "pinn.train",  # (the refinement: `pinn.refine.refine`; `pinn.refine` is its module)
    **{name: "pinn.evaluate" for name in ("accuracy", "Accuracy")},
    # references
    **{name: "pinn.reference" for name in ("Reference", "rel_l2", "from_exact", "periodic_1d")},
    # the pipeline
    **{name: "pinn.pipeline" for name in ("make_project", "repro", "run_in_process")},
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        # a submodule not imported yet (`pinn.sampling.rad`, `help(pinn.sampling)`): import it
        if not name.startswith("_") and find_spec(f"{__name__}.{name}") is not None:
            return import_module(f"{__name__}.{name}")
        raise AttributeError(f"module 'pinn' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    """The exported names and the package's own dunders (not its helper imports: `Any`, ...)."""
    return sorted({n for n in globals() if n.startswith("__")} | set(_EXPORTS))
