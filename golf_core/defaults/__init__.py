"""Core defaults: ordinary techniques registered in every run, their firstresult hooks ``trylast``.

Each can be configured through its ``[techniques.<name>]`` table like any technique, and any
enabled technique that implements the same firstresult hook replaces it.
"""
