"""How far can a model be trusted: k-step error, calibration and the horizon it supports. No torch.

The model is rolled open-loop from real states along real action sequences and compared
with what really happened (docs/analyze.md explains every metric):

1. **Data**: :func:`collect_trajectory` runs a policy (the planner over the model, or
   random actions) in the simulator and keeps observations, actions, rewards and the
   physics states. :func:`make_windows` cuts every trajectory into windows of H steps:
   start observation ``o_t``, actions ``a_t .. a_{t+H-1}``, true ``o_{t+1} .. o_{t+H}``
   and rewards ``r_t .. r_{t+H-1}``.
2. **Prediction**: a :class:`Predictor` starts from ``o_t`` (``begin``) and is fed the
   window's actions one step at a time (``step``), never seeing a real observation again.
   :func:`make_predictor` gives the predictor of a model file's family
   (``models/<family>/predictor.py``: PETS, the latent model),
   :class:`SimPredictor` the true simulator (an exact model, for tests and as a reference),
   :class:`FunctionPredictor` any ``(obs, act) -> (next_obs, reward)`` function.
3. **Metrics** (:func:`analyze`), all as functions of k = 1..H:

   - state error ``e_k``: per window, the RMS over dimensions of ``(pred - true) / s``,
     with ``s`` (O,) the standard deviation of each observation dimension in the data;
     the mean and 90th percentile over windows; also the raw RMSE per dimension. Against
     the last-state baseline (``o_t`` held) and the constant-velocity one
     (``o_t + k (o_t - o_{t-1})``).
   - reward error ``|r_hat - r|`` at step k, and the error of the predicted k-step return
     ``R_k = sum_{j<k} gamma^j r_{t+j}``, against the same baselines on the reward (last
     reward held; linear extrapolation of the last two).
   - calibration: the ensemble disagreement ``d_k`` (RMS over dimensions of the members'
     standard deviation, normalised by ``s``) and the predicted standard deviation
     (disagreement and the members' predicted noise) against the true error ``e_k``, as a
     reliability curve (quantile bins of the prediction) and Spearman rank correlations:
     pooled over all (window, k) pairs, and within each k.
   - a suggested horizon: the largest k such that for every j <= k the mean return error
     stays within ``fraction`` times the spread (standard deviation over windows) of the
     true j-step return; compared with the MBPO-style linear-drift rule (Janner et al.,
     "When to Trust Your Model", NeurIPS 2019, lemma B.2): if the one-step state
     distribution error ``eps`` only added up (``k eps`` after k steps), the return error
     after k steps would be ``eps_R k (k + 1) / 2`` with ``eps_R`` the one-step reward error.

Every function over arrays is pure numpy and states its shapes; Spearman's correlation is
computed here (average ranks for ties), so scipy is not needed.

Modules: :mod:`.collect` (data and windows), :mod:`.predictors` (the predictor interface,
the simulator and function predictors, rollouts), :mod:`.metrics` (the metrics and the
JSON report), :mod:`.report` (plots).
"""

from .collect import VALUE_TAIL, Trajectory, Windows, collect_trajectory, make_windows
from .metrics import (
                      ANALYSIS_FILE,
                      analyze,
                      constant_velocity_baseline,
                      discounted_cumsum,
                      last_state_baseline,
                      linear_drift_horizon,
                      normalised_error,
                      rankdata,
                      read_suggested_horizon,
                      reliability_curve,
                      spearman,
                      supported_horizon,
                      to_json,
)
from .predictors import (
                      FunctionPredictor,
                      Prediction,
                      Predictor,
                      Rollouts,
                      SimPredictor,
                      make_predictor,
                      predict_windows,
)
from .report import plot_calibration, plot_errors

__all__ = ["Trajectory", "Windows", "Prediction", "Predictor", "SimPredictor", "FunctionPredictor", "Rollouts",
           "make_predictor", "collect_trajectory", "make_windows", "predict_windows", "analyze", "rankdata",
           "spearman", "reliability_curve", "normalised_error", "discounted_cumsum", "supported_horizon",
           "linear_drift_horizon", "last_state_baseline", "constant_velocity_baseline", "plot_errors",
           "plot_calibration", "ANALYSIS_FILE", "VALUE_TAIL", "read_suggested_horizon", "to_json"]
