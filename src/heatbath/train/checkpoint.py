"""Save and load model parameters as plain `.npz` arrays (no pickle: nodes are identities and never serialised).

A file holds the model's array leaves in PyTree order. Loading puts them into a template model of the
same structure (built by the same code that built the saved one), checking count, shapes and dtypes.
"""

from __future__ import annotations

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PyTree

from heatbath.errors import HeatbathError

__all__ = ["save_model", "load_model"]

_FORMAT = "heatbath-arrays-v1"


def save_model(path: str | os.PathLike, model: PyTree) -> None:
    """Write every array leaf of `model` to `path` (an `.npz` file, written to exactly that name)."""
    leaves = jax.tree.leaves(eqx.filter(model, eqx.is_array))
    arrays = {f"leaf_{i:05d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    with open(path, "wb") as f:
        np.savez(f, __format__=np.array(_FORMAT), **arrays)


def load_model(path: str | os.PathLike, like: PyTree) -> PyTree:
    """`like` with its array leaves replaced by those saved at `path`; `like` fixes nodes, blocks and structure."""
    params, static = eqx.partition(like, eqx.is_array)
    template, treedef = jax.tree.flatten(params)
    with np.load(path, allow_pickle=False) as f:
        if "__format__" not in f.files or str(f["__format__"]) != _FORMAT:
            raise HeatbathError(
                f"{os.fspath(path)!r} is not a heatbath model file (written by heatbath.train.save_model)."
            )
        names = sorted(n for n in f.files if n.startswith("leaf_"))
        if len(names) != len(template):
            raise HeatbathError(
                f"{os.fspath(path)!r} holds {len(names)} arrays but the template model has {len(template)}; load it into "
                "a model built the same way as the saved one."
            )
        loaded = []
        for i, (name, want) in enumerate(zip(names, template)):
            arr = f[name]
            if arr.shape != tuple(want.shape) or arr.dtype != np.dtype(want.dtype):
                raise HeatbathError(
                    f"Array {i} in {os.fspath(path)!r} has shape {arr.shape} and dtype {arr.dtype}, but the template "
                    f"has {tuple(want.shape)} and {np.dtype(want.dtype)}; the template must match the saved model."
                )
            loaded.append(jnp.asarray(arr))
    return eqx.combine(jax.tree.unflatten(treedef, loaded), static)
