"""pinn: accurate, fast, reproducible physics-informed neural networks in JAX.

The pipeline (dvc.yaml) runs the stages of `pinn.stages`; the components they compose live in
the modules of this package (see docs/architecture.md).
"""
