"""DeepXDE's standard Burgers example (examples/pinn_forward/Burgers.py, DeepXDE 1.15), timed and
evaluated on this project's certified reference.

Runs inside the peer's own virtual environment (made by `benchmarks/peers/burgers.py`), never in
the project's: it imports DeepXDE and its backend only, not `pinn`.

The example's configuration: FNN [2] + [20]*3 + [1], tanh, Glorot normal; TimePDE with 2540
domain / 80 boundary / 160 initial points (pseudo-random, drawn once); Adam lr 1e-3 for 15000
iterations, then L-BFGS with DeepXDE's defaults (maxcor 100, ftol 0, gtol 1e-8, maxiter 15000,
strong Wolfe line search); float32 (DeepXDE's default). Two changes, both stated in the results:
- time domain [0, 1] (the example's 0.99 is the end of its own data set's grid; our reference
  and our model cover [0, 1], and rel L2 is taken over the whole reference grid);
- L-BFGS is driven in calls of `--lbfgs-chunk` iterations (DeepXDE's PyTorch backend uses 1000)
  so that the error can be read every `--lbfgs-chunk` iterations. The optimizer's state (history
  pairs, step) carries over between calls; each call costs one extra loss/gradient evaluation and
  DeepXDE's own per-call test-loss evaluation (both counted on the peer's clock).

The clock starts just before the first `model.compile` (points and network built before, as our
collocation stage runs before our training clock starts) and stops after the last iteration. The
rel L2 probes (every `--eval-every` Adam iterations and after every L-BFGS call) are excluded:
their time is measured and subtracted. DeepXDE's own loss display (every 1000 Adam iterations,
its default) stays on the clock.

    <peer venv>/bin/python benchmarks/peers/deepxde_burgers.py --reference burgers.npz --out run.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("DDE_BACKEND", "pytorch")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True, help="pinn reference burgers_1d --out FILE (.npz: t, x, u)")
    ap.add_argument("--out", required=True, help="JSON with the curve and the run's metadata")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--adam-steps", type=int, default=15000)
    ap.add_argument("--lbfgs-maxiter", type=int, default=15000)
    ap.add_argument("--lbfgs-chunk", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=100, help="Adam iterations between rel L2 probes")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="stop after this many seconds on the clock (a budget cap; default none)")
    ap.add_argument("--t-end", type=float, default=1.0, help="time domain end (the example's 0.99)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads (default: the backend's own, one per core)")
    args = ap.parse_args(argv)

    import numpy as np
    import deepxde as dde
    from deepxde.backend import backend_name

    if args.threads is not None and backend_name == "pytorch":
        import torch

        torch.set_num_threads(args.threads)

    ref = np.load(args.reference)
    t_ref, x_ref, u_ref = ref["t"], ref["x"], ref["u"]  # u[i, j] = u(t_i, x_j)
    xx, tt = np.meshgrid(x_ref, t_ref)  # (len(t), len(x)), as u
    X_ref = np.stack([xx.ravel(), tt.ravel()], axis=1)  # DeepXDE's input order: (x, t)
    u_norm = float(np.linalg.norm(u_ref.ravel()))

    dde.config.set_random_seed(args.seed)
    nu = 0.01 / np.pi

    def pde(x, y):
        dy_x = dde.grad.jacobian(y, x, i=0, j=0)
        dy_t = dde.grad.jacobian(y, x, i=0, j=1)
        dy_xx = dde.grad.hessian(y, x, i=0, j=0)
        return dy_t + y * dy_x - nu * dy_xx

    class Clock:
        def __init__(self):
            self.t0 = None
            self.excluded = 0.0

        def start(self):
            self.t0 = time.perf_counter()

        def now(self) -> float:
            return time.perf_counter() - self.t0 - self.excluded

    clock = Clock()
    rows: list[dict] = []
    state = {"phase": "adam", "stopped_by_limit": False}

    def rel_l2(model) -> float:
        pred = np.asarray(model.predict(X_ref), dtype=np.float64).reshape(u_ref.shape)
        return float(np.linalg.norm((pred - u_ref).ravel()) / u_norm)

    class Probe(dde.callbacks.Callback):
        def __init__(self, every: int):
            super().__init__()
            self.every = every

        def probe(self, force: bool = False):
            step = int(self.model.train_state.step)
            if state["phase"] == "adam" and not force and step % self.every:
                return
            if rows and rows[-1]["step"] == step:
                return
            wall = clock.now()
            t = time.perf_counter()
            err = rel_l2(self.model)
            clock.excluded += time.perf_counter() - t
            rows.append({"phase": state["phase"], "step": step, "wall_s": wall, "rel_l2": err})
            if args.time_limit is not None and wall >= args.time_limit:
                state["stopped_by_limit"] = True
                self.model.stop_training = True

        def on_epoch_end(self):
            self.probe()

        def on_train_end(self):
            self.probe(force=True)

    t_process = time.perf_counter()
    geom = dde.geometry.Interval(-1, 1)
    timedomain = dde.geometry.TimeDomain(0, args.t_end)
    geomtime = dde.geometry.GeometryXTime(geom, timedomain)
    bc = dde.icbc.DirichletBC(geomtime, lambda x: 0, lambda _, on_boundary: on_boundary)
    ic = dde.icbc.IC(geomtime, lambda x: -np.sin(np.pi * x[:, 0:1]), lambda _, on_initial: on_initial)
    data = dde.data.TimePDE(geomtime, pde, [bc, ic], num_domain=2540, num_boundary=80, num_initial=160)
    net = dde.nn.FNN([2] + [20] * 3 + [1], "tanh", "Glorot normal")
    model = dde.Model(data, net)
    setup_s = time.perf_counter() - t_process

    probe = Probe(args.eval_every)
    clock.start()
    model.compile("adam", lr=1e-3)
    model.train(iterations=args.adam_steps, callbacks=[probe], verbose=0)
    adam_end = clock.now()
    lbfgs_info = {}
    if not state["stopped_by_limit"] and args.lbfgs_maxiter > 0:
        state["phase"] = "lbfgs"
        dde.optimizers.set_LBFGS_options(maxiter=args.lbfgs_maxiter)
        opts = dde.optimizers.LBFGS_options
        if backend_name in ("pytorch", "paddle"):
            opts["iter_per_step"] = min(args.lbfgs_chunk, opts["maxiter"])
            opts["fun_per_step"] = opts["maxfun"] * opts["iter_per_step"] // opts["maxiter"]
        model.compile("L-BFGS")
        model.train(callbacks=[probe], verbose=0)
        if backend_name == "pytorch":
            st = model.opt.state_dict()["state"].get(0, {})
            lbfgs_info = {"n_iter": int(st.get("n_iter", 0)), "func_evals": int(st.get("func_evals", 0))}
        lbfgs_info["options"] = {k: v for k, v in opts.items()}
    total = clock.now()

    versions = {"deepxde": dde.__version__, "numpy": np.__version__, "python": platform.python_version(),
                "backend": backend_name}
    threads = None
    if backend_name == "pytorch":
        import torch

        versions["torch"] = torch.__version__
        threads = torch.get_num_threads()
    out = {
        "peer": "deepxde", "backend": backend_name, "versions": versions, "torch_threads": threads,
        "seed": args.seed,
        "config": {"net": "FNN [2]+[20]*3+[1] tanh, Glorot normal", "num_domain": 2540,
                   "num_boundary": 80, "num_initial": 160, "adam_lr": 1e-3,
                   "adam_steps": args.adam_steps, "lbfgs_maxiter": args.lbfgs_maxiter,
                   "lbfgs_chunk": args.lbfgs_chunk, "time_domain": [0.0, args.t_end],
                   "float": f"float{dde.config.real.precision}",
                   "eval_every_adam": args.eval_every, "time_limit_s": args.time_limit},
        "setup_s": setup_s, "adam_wall_s": adam_end, "training_wall_s": total,
        "excluded_probe_s": clock.excluded, "stopped_by_time_limit": state["stopped_by_limit"],
        "steps": int(model.train_state.step), "lbfgs": lbfgs_info,
        "final_rel_l2": rows[-1]["rel_l2"] if rows else None,
        "final_train_loss": [float(v) for v in np.ravel(model.train_state.loss_train)],
        "curve": rows,
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"deepxde ({backend_name}): {out['steps']} iterations in {total:.1f} s "
          f"(probes {clock.excluded:.1f} s excluded); final rel L2 {out['final_rel_l2']:.3e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
