"""Optimizers: Muon with a pluggable orthogonalizer, Adam groups routed by parameter role, schedules."""
