"""Evaluation: the core scoring pass, its ledger, and the adapters that take part in it.

Modules: ``scoring`` (:func:`~golf_core.eval.scoring.evaluate`, the one left-to-right pass),
``ledger`` (what was scored: C2/C3/C4 checks, all-reduced sums), ``stream`` (the validation tokens,
documents, byte counts and the guarded accessors adapters use), ``plan`` (windows, batches, chunk
ends, the window plans), ``adapters`` (the :class:`~golf_core.eval.adapters.EvalAdapter` protocol),
``probe`` (per-target scores and perturbations for adapter tests).
"""
