"""memfit's analytic core: pure functions over frozen dataclasses, standard library only.

No I/O, printing, logging, environment variables or mutable globals live here; shells call the core.
"""
