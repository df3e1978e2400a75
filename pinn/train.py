"""The first-order training phase: components composed into one jitted step.

A `Trainer` closes over static things (problem, network graph, sampler, balancer, optimizer) and
exposes pure functions over a `TrainState` pytree:

    state = trainer.init(params, seed)          # components' init(...)
    state, metrics = trainer.run(state, n)      # n steps of one jitted step in a lax.scan

One step (all inside jit, no Python control flow on traced values):
    sampler.update → batch (points, weights) → loss terms L_i → total Σ w_i L_i →
    grads → balancer.update (per-term grad norms only on its update steps) → optimizer →
    params, unless the loss or gradient is non-finite: then the update is skipped and
    `state.nonfinite` counts it, so divergence is caught within one step.
The loss terms are named (`pinn.loss`): the problem's PDE residuals (`pde` for the built-ins;
Σ wᵢ rᵢ² / Σ wᵢ, optionally causally weighted) and its conditions' terms (`ic`, `bc`, ...: mean
squared mismatch, those the network satisfies by construction left out).

NTK diagnostics (`train.ntk_every` > 0; 0 = off): every `ntk_every` steps, inside the jitted step
under `lax.cond` (one compiled program; the other steps do not pay for it), the metrics get
`ntk_<term>` per loss term: the trace of the term's block of the empirical neural tangent kernel
divided by its number of points, i.e. the mean over a fixed subsample of points of
‖∂r(z)/∂θ‖², where r is the term's per-point residual (unweighted). The subsample
(`train.ntk_points` points per term, drawn once from the seed) is the same at every step, so
the values are comparable over training. Between computations the last value is carried (across
`run` calls too; a resumed run computes once at its first step), so every logged row has one.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from pinn import balancing, distributed, optim, sampling
from pinn.loss import LossSpec, loss_spec, loss_terms, term_residuals  # noqa: F401 (re-exported)
from pinn.config import Params
from pinn.models import apply_fn, split


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    sampler_state: Any
    balancer_state: Any
    key: jax.Array
    step: jax.Array  # int32 scalar: steps taken in this phase
    nonfinite: jax.Array  # int32 scalar: steps skipped because loss/grads were not finite
    lr_scale: jax.Array  # float32 scalar multiplying Adam's updates (lowered after a divergence)


def tree_norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree)))


def tree_all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


def per_point_sq_grad_norm(residual: Callable, params) -> jax.Array:
    """Mean over the M outputs of `residual(params) -> (M,)` of ‖∂rᵢ/∂θ‖² (= tr(J Jᵀ) / M)."""
    jac = jax.jacrev(residual)(params)
    leaves = jax.tree_util.tree_leaves(jac)
    rows = leaves[0].shape[0]
    total = sum(jnp.sum(jnp.square(x)) for x in leaves)
    return total / rows


class Trainer:
    """One training phase (one cascade level) for a network of fixed width.

    `mesh` (or `distributed.data_parallel: true` in params): data parallel over the mesh's
    `"data"` axis (`pinn.distributed`): all state replicated, the batches split; None: one device.
    """

    def __init__(
        self, cfg: Params, problem, model, *, fixed_points=None, dtype=jnp.float32, mesh=None
    ):
        self.cfg = cfg
        self.problem = problem
        self.dtype = dtype
        self.graphdef, _, self.rest = split(model)
        self.u = apply_fn(self.graphdef, self.rest)
        self.spec = loss_spec(cfg, problem)
        self.term_names = self.spec.term_names
        domain = problem.domain
        self.lower = jnp.asarray(problem.lower, dtype)
        self.upper = jnp.asarray(problem.upper, dtype)
        # initial points: the spatial columns (all but time); none without an initial condition
        # (a steady problem)
        spatial = problem.spatial_axes
        self.ic_lower = jnp.asarray([problem.lower[i] for i in spatial], dtype)
        self.ic_upper = jnp.asarray([problem.upper[i] for i in spatial], dtype)
        self.has_initial = problem.has_initial
        if fixed_points is not None:
            fixed_points = jnp.asarray(fixed_points, dtype)
        self.sampler = sampling.make_sampler(cfg.sampling, domain, fixed_points=fixed_points)
        self.balancer = balancing.make_balancer(cfg.balancing, self.term_names)
        self.optimizer = optim.adam(cfg.optimizer)
        # data parallel (pinn.distributed): state replicated, batches split along "data"
        if mesh is None and cfg.distributed.data_parallel:
            mesh = distributed.make_mesh()
        self.mesh = mesh
        if mesh is not None:
            first_batch = lambda k: self.sampler.batch(self.sampler.init(k))[0]
            rows = jax.eval_shape(first_batch, jax.random.PRNGKey(0)).shape[0]
            distributed.check_batch_sizes(cfg, rows, mesh)
        self.ntk_every, ntk_points = cfg.train.ntk_every, cfg.train.ntk_points
        if self.ntk_every:
            # the fixed subsample: drawn once from the seed, the same at every step
            k_int, k_ic, k_bc = jax.random.split(
                jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 0x4E544B), 3)
            self.ntk_points = (self._interior_points(k_int, ntk_points),
                               self._ic_points(k_ic, ntk_points),
                               self._interior_points(k_bc, ntk_points))
            # the last traces computed (NaN before the first); carried across `run` calls
            self._ntk_last = jnp.full((len(self.term_names),), jnp.nan, dtype)
        self._run = jax.jit(self._run_impl, static_argnums=1)
        self.compiles = 0  # traces of the jitted run (a test checks it stays at 1 per length)

    # --- pure functions -------------------------------------------------------------------
    def init(self, params, seed: int) -> TrainState:
        key = jax.random.PRNGKey(seed)  # raw uint32 key: checkpoints as a plain array
        k_sampler, k_state = jax.random.split(key)
        state = TrainState(
            params=params,
            opt_state=self.optimizer.init(params),
            sampler_state=self.sampler.init(k_sampler),
            balancer_state=self.balancer.init(len(self.term_names)),
            key=k_state,
            step=jnp.zeros((), jnp.int32),
            nonfinite=jnp.zeros((), jnp.int32),
            lr_scale=jnp.ones((), jnp.float32),
        )
        return state if self.mesh is None else distributed.replicate(state, self.mesh)

    def residual_fn(self, params) -> Callable[[jax.Array], jax.Array]:
        if self.mesh is not None:  # a candidate pool's evaluation is split along "data"
            mesh = self.mesh
            field = lambda zz: self.u(params, zz)
            return lambda z: self.problem.residual(field, distributed.shard_batch(z, mesh))
        return lambda z: self.problem.residual(lambda zz: self.u(params, zz), z)

    def _ic_points(self, key, n):
        """`n` uniform points over the spatial columns `(n, d_space)` (the initial face without
        its time column); `(0, d_space)` when the problem has no initial condition."""
        n = n if self.has_initial else 0
        x = jax.random.uniform(key, (n, self.ic_lower.shape[0]), self.dtype)
        return self.ic_lower + (self.ic_upper - self.ic_lower) * x

    def _interior_points(self, key, n):
        z = jax.random.uniform(key, (n, len(self.problem.lower)), self.dtype)
        return self.lower + (self.upper - self.lower) * z

    def step(self, state: TrainState) -> tuple[TrainState, dict]:
        cfg = self.cfg
        key, k_sample, k_ic, k_bc = jax.random.split(state.key, 4)
        sampler_state = self.sampler.update(
            state.sampler_state, k_sample, state.step, self.residual_fn(state.params)
        )
        points, weights = self.sampler.batch(sampler_state)
        ic_x = self._ic_points(k_ic, cfg.sampling.ic_batch_size)
        bc_z = self._interior_points(k_bc, cfg.sampling.bc_batch_size)
        data = (points, weights, ic_x, bc_z)
        if self.mesh is not None:
            data = tuple(distributed.shard_batch(x, self.mesh) for x in data)

        def terms_of(p):
            return loss_terms(self.problem, self.spec, self.u, p, *data)

        w = self.balancer.weights(state.balancer_state)

        def total(p):
            terms, aux = terms_of(p)
            return jnp.dot(w.astype(terms.dtype), terms), (terms, aux)

        (loss, (terms, aux)), grads = jax.value_and_grad(total, has_aux=True)(state.params)

        def grad_norms():
            jac = jax.jacrev(lambda p: terms_of(p)[0])(state.params)
            sq = sum(
                jnp.sum(jnp.square(x).reshape(x.shape[0], -1), axis=1)
                for x in jax.tree_util.tree_leaves(jac)
            )
            return jnp.sqrt(sq)

        balancer_state = self.balancer.update(state.balancer_state, state.step, terms, grad_norms)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        # Adam's update is linear in the learning rate: scaling it is scaling the learning rate
        updates = jax.tree_util.tree_map(lambda x: x * state.lr_scale.astype(x.dtype), updates)
        new_params = optax.apply_updates(state.params, updates)
        ok = jnp.isfinite(loss) & tree_all_finite(grads)
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)
        new_state = TrainState(
            params=keep(new_params, state.params),
            opt_state=keep(opt_state, state.opt_state),
            sampler_state=keep(sampler_state, state.sampler_state),
            balancer_state=keep(balancer_state, state.balancer_state),
            key=key,
            step=state.step + 1,
            nonfinite=state.nonfinite + jnp.where(ok, 0, 1).astype(jnp.int32),
            lr_scale=state.lr_scale,
        )
        metrics = {"loss": loss, "grad_norm": tree_norm(grads)}
        for i, name in enumerate(self.term_names):
            metrics[f"loss_{name}"] = terms[i]
            metrics[f"weight_{name}"] = w[i]
        metrics.update(aux)
        metrics.update(self.sampler.stats(sampler_state, state.step))
        return new_state, metrics

    def ntk_traces(self, params) -> jax.Array:
        """Per loss term (`term_names` order): tr(K_term) / points on the fixed NTK subsample,
        i.e. the mean over its points of ‖∂r(z)/∂θ‖² for the term's unweighted residual r."""
        z, ic_x, bc_z = self.ntk_points

        def residual(name):
            return lambda p: term_residuals(self.problem, self.spec, lambda zz: self.u(p, zz),
                                            z, ic_x, bc_z)[name]

        return jnp.stack([per_point_sq_grad_norm(residual(n), params)
                          for n in self.term_names]).astype(self.dtype)

    def _run_impl(self, state: TrainState, num_steps: int, ntk=None):
        self.compiles += 1

        if not self.ntk_every:
            def body(s, _):
                s, m = self.step(s)
                return s, m

            state, metrics = jax.lax.scan(body, state, None, length=num_steps)
        else:
            def body(carry, _):
                s, last_ntk = carry
                # every `ntk_every` steps, and once at the start when nothing is carried yet
                # (a run resumed between two computations): every logged row has a value
                due = (s.step % self.ntk_every == 0) | jnp.isnan(last_ntk[0])
                ntk_now = jax.lax.cond(due, lambda: self.ntk_traces(s.params), lambda: last_ntk)
                s, m = self.step(s)
                m.update({f"ntk_{name}": ntk_now[i] for i, name in enumerate(self.term_names)})
                return (s, ntk_now), m

            ntk = jnp.asarray(ntk).astype(self.dtype)
            (state, ntk), metrics = jax.lax.scan(body, (state, ntk), None, length=num_steps)
        last = jax.tree_util.tree_map(lambda x: x[-1], metrics)
        if self.mesh is not None:
            state, last = distributed.constrain_replicated((state, last), self.mesh)
        return (state, last) if not self.ntk_every else (state, last, ntk)

    def run(self, state: TrainState, num_steps: int) -> tuple[TrainState, dict]:
        """`num_steps` jitted steps; returns the new state and the last step's metrics."""
        if self.mesh is not None:
            state = distributed.replicate(state, self.mesh)
        if not self.ntk_every:
            return self._run(state, int(num_steps))
        state, last, self._ntk_last = self._run(state, int(num_steps), self._ntk_last)
        return state, last

    def field(self, params) -> Callable[[jax.Array], jax.Array]:
        return lambda z: self.u(params, z)
