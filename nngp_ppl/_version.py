"""The package version and its 64-bit JAX switch: a leaf module, so that code inside the
package never imports the package root (``nngp_ppl/__init__.py`` only re-exports).

Why the whole process runs in float64 is explained in the package docstring.
"""

from __future__ import annotations

import jax

__all__ = ["__version__", "enable_x64", "require_x64"]

__version__ = "0.1.0"


def enable_x64() -> None:
    """Switch JAX to 64-bit types (idempotent; called when the package is imported)."""
    jax.config.update("jax_enable_x64", True)


def require_x64(what: str) -> None:
    """Refuse to compute ``what`` in float32 after someone turned JAX's x64 mode off."""
    if not jax.config.jax_enable_x64:
        raise RuntimeError(
            f"{what} needs JAX's 64-bit mode, which was turned off after nngp_ppl was "
            "imported; call nngp_ppl.enable_x64() (or run 32-bit code in another process)"
        )
