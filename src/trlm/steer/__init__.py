"""AxBench-style concept detection and steering over plain forward hooks (no pyvene / pyreft).

    from trlm.steer import Additive, steer
    with steer(engine.model, {10: Additive(w, alpha=4.0)}):
        engine.generate(...)

Modules: :mod:`~trlm.steer.hooks` (interventions and the ``steer`` context manager), :mod:`~trlm.steer.data`
(AxBench setting directories), :mod:`~trlm.steer.activations` (chat-template activations), :mod:`~trlm.steer.methods`
(DiffMean, PCA, LAT, probe, bag-of-words), :mod:`~trlm.steer.detect` (AUROC, max_act, saved directions).
"""

from trlm.steer.hooks import Additive, Clamp, TopKMean, steer

__all__ = ["Additive", "Clamp", "TopKMean", "steer"]
