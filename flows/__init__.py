"""Prefect flows over the DVC pipeline.

    flows.pipeline     one Prefect task per dvc.yaml stage, each run with `dvc repro --single-item`
    flows.regression   the pipeline on the regression-benchmark params, compared with a baseline

Nothing is imported here (importing `flows` stays cheap, and works the same when an editable
install maps `flows` as a namespace package); `flows.pipeline` sets the Prefect defaults.
"""
