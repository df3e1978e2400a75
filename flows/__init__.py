"""Prefect flows over the DVC pipeline.

    flows.pipeline     one Prefect task per dvc.yaml stage, each run with `dvc repro --single-item`
    flows.regression   the regression suite (benchmarks/regression/suite.yaml) vs its 3-seed baseline
    flows.ablation     an ablation study (pinn ablate) as DVC experiments, its report as artifacts

Nothing is imported here (importing `flows` stays cheap, and works the same when an editable
install maps `flows` as a namespace package); `flows.pipeline` sets the Prefect defaults.
"""
