"""The layout active while a step is traced: activation constraints and the row-sharded loss head.

`activate(layout)` is entered inside a jitted function's body (so the trace and jit's cache agree);
model code calls `constrain(x, names)`, a no-op when no layout is active or the mesh has one device.
"""

import contextlib
import contextvars

import jax
from jax.sharding import PartitionSpec

from caopd_jax.sharding.rules import Layout

_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("caopd_layout", default=None)


@contextlib.contextmanager
def activate(layout: Layout | None):
  token = _ACTIVE.set(layout if layout is not None and layout.mesh.size > 1 else None)
  try:
    yield
  finally:
    _ACTIVE.reset(token)


def active() -> Layout | None:
  """The layout over several devices active in this trace, or None (one device, or none given)."""
  return _ACTIVE.get()


def constrain(x: jax.Array, names: tuple) -> jax.Array:
  """x with its sharding pinned to the active layout's spec for logical dimension `names`."""
  layout = _ACTIVE.get()
  return x if layout is None else jax.lax.with_sharding_constraint(x, layout.sharding(names, x.shape))


def map_rows(fn):
  """fn(h_s, w_s, targets, h_t, w_t, **kw) run per shard of rows under the active layout (`jax.shard_map`:
  rows split over the batch axes, the unembeddings gathered whole). For kernels that XLA cannot partition
  (Pallas); without an active layout, or when the rows do not divide, fn itself."""
  def wrapped(h_s, w_s, targets, h_t=None, w_t=None, **kw):
    layout = _ACTIVE.get()
    rows = layout.spec(("batch",), targets.shape[:1]) if layout is not None else PartitionSpec(None)
    if rows[0] is None:
      return fn(h_s, w_s, targets, h_t, w_t, **kw)
    row, whole = PartitionSpec(rows[0]), PartitionSpec()
    teacher = h_t is not None
    mapped = jax.shard_map(lambda *a: fn(a[0], a[1], a[2], *(a[3:] if teacher else (None, None)), **kw),
                           mesh=layout.mesh, in_specs=(row, whole, row) + ((row, whole) if teacher else ()),
                           out_specs=row, check_vma=False)
    return mapped(h_s, w_s, targets, *((h_t, w_t) if teacher else ()))
  return wrapped
