"""Silence simulator chatter that says nothing to a user of this package.

robosuite warns on every import that it has no private macro file, three lines in every
process that imports it (each evaluation and demo worker); the defaults it falls back to
are the ones LIBERO is run with, so the advice only clutters a run's log.
"""

from __future__ import annotations

import logging

__all__ = ["silence_robosuite_macro_warnings"]

# The logger robosuite's DefaultLogger creates; a filter on it survives robosuite's setup.
_ROBOSUITE_LOGGER = "robosuite_logs"
_MACRO_ADVICE = ("private macro file", "setup_macros.py")


class _MacroAdviceFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(phrase in message for phrase in _MACRO_ADVICE)


def silence_robosuite_macro_warnings() -> None:
    """Drop robosuite's macro-file advice in this process (call before robosuite is imported)."""
    logger = logging.getLogger(_ROBOSUITE_LOGGER)
    if not any(isinstance(f, _MacroAdviceFilter) for f in logger.filters):
        logger.addFilter(_MacroAdviceFilter())
