"""jaxfgcm.fit: the FGCM fit in JAX -- device arrays in, a parameter pytree out.

- :class:`FitData` (data.py): observation, exposure and (exposure, detector) arrays;
- :class:`FitParams` (params.py): the parameter pytree, :func:`free_mask` for freezing;
- :func:`standard_magnitudes` (model.py): THE magnitude model;
- :func:`chi2` (loss.py): the loss, a pure differentiable function;
- :func:`minimize` (optimize.py): Gauss-Newton / L-BFGS over the free parameters;
- :func:`run_cycle` (cycle.py), :func:`run_fit_cycles` (driver.py): fit cycles and products;
- :func:`parameter_covariance` (uncertainty.py): errors from the Gauss-Newton Hessian.

Importing this package turns on JAX float64 (``jax_enable_x64``): parameters and every
reduction over observations are float64 (see data.py for the measured reason).
"""

import jax

jax.config.update("jax_enable_x64", True)

from .cycle import CycleState, run_cycle
from .data import FitData, FitDataError
from .driver import FitResult, run_fit_cycles
from .loss import FitState, chi2, degrees_of_freedom, residuals
from .model import standard_magnitudes
from .optimize import minimize
from .params import FitParams, free_mask
from .uncertainty import parameter_covariance, propagate

__all__ = [
    "CycleState",
    "FitData",
    "FitDataError",
    "FitParams",
    "FitResult",
    "FitState",
    "chi2",
    "degrees_of_freedom",
    "free_mask",
    "minimize",
    "parameter_covariance",
    "propagate",
    "residuals",
    "run_cycle",
    "run_fit_cycles",
    "standard_magnitudes",
]
