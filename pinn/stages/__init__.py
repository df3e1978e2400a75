"""The pipeline's stages, one module each; `dvc.yaml` runs them as

    python -m pinn.stages.<stage> --params params.yaml --<input> PATH ... --<output> PATH ...

Every path a stage reads or writes is on its command line in dvc.yaml and nowhere else. A stage
reads only the params keys and files dvc.yaml declares for it (tests/test_stage_contracts.py
checks both: code dependencies against the import graph, params by perturbing undeclared keys),
writes only its declared outputs, atomically and byte-deterministically.

    gate          params.yaml valid → stamp (upstream of every stage: a bad file removes nothing)
    reference     certified reference solution
    collocation   fixed point sets (interior, initial, boundary)
    init          the seeded coarsest network (its parameters only)
    train         one cascade level (resumable)
    refine        quasi-Newton refinement of the finest level (resumable)
    evaluate      accuracy on the reference grid → metrics.json
    report        markdown + figures
"""
