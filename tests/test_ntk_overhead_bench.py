"""The NTK-overhead benchmark measures the product's step with the NTK on (no timing asserted)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed

from benchmarks.ntk_overhead import measure  # noqa: E402

TINY = {
    "problem": {"name": "burgers_1d"},
    "model": {"width": 8, "depth": 1},
    "sampling": {"batch_size": 64, "ic_batch_size": 16, "bc_batch_size": 16},
    "multilevel": {"num_levels": 1, "levels": {"level0": {"steps": 20, "init_from": "init"}}},
    "refine": {"method": "none"},
    "train": {"ntk_points": 8},
}


def test_benchmark_builds_the_ntk_step_and_does_not_recompile_across_steps():
    r = measure(TINY, intervals=(5,), chunk=10, rounds=2, single_rounds=1, single_reps=2,
                log=lambda _: None)
    # the contender really has the NTK on: its runs log the columns, the baseline's do not
    assert r["ntk_columns"] == {"off": [], "every_5": ["ntk_bc", "ntk_ic", "ntk_pde"]}
    assert all(v > 0 for v in r["ntk_last_values_sanity_only"]["every_5"].values())
    assert r["per_step_average"]["every_5"]["ntk_steps_per_chunk"] == [2]
    # timed calls move the step counter (branch taken and not) without compiling anything new:
    # one program per run length (the chunk and the one-step run), traced once each
    comp = r["compilations"]
    assert not comp["recompiled_while_timed"]
    assert comp["after_timing"]["cache_size"] == {"off": 2, "every_5": 2}
    assert comp["after_timing"]["traces"] == {"off": 2, "every_5": 2}
    # XLA kept the branch as a conditional (not a select that would compute the NTK every step)
    assert r["xla_conditionals"]["every_5"] == r["xla_conditionals"]["off"] + 1
    assert set(r["single_step"]) == {"every_5_taken", "every_5_not_taken"}
