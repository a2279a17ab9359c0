"""The errors DBA Studio raises for problems a user can fix.

Every user-facing error derives from :class:`DBAError`; the CLI prints its message (no traceback) and exits non-zero,
and the app shows it in the page. Anything else that escapes is a bug.
"""


class DBAError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""


class ModelLoadError(DBAError):
    """A model name, path or option that cannot be loaded."""


class DataError(DBAError):
    """A corpus or evaluation file that cannot be read or has the wrong shape."""


class AnchorMismatchError(DBAError):
    """A saved global gradient that does not belong to the model / adapter layout it is loaded against."""


class EvaluationError(DBAError):
    """An evaluation option that cannot be used (unknown scorer, a combination that lacks a needed score)."""


class TrainingError(DBAError):
    """A fine-tuning run that cannot continue (e.g. too many non-finite gradients in a row)."""


class DivergedError(TrainingError):
    """A run stopped by the collapse guard (loss flat or rising far above its start, zero gradients, exploding or
    non-finite weights); its folder is marked ``diverged`` and keeps its last good checkpoint."""


class DiskFullError(DBAError):
    """No space left on the device (or quota exceeded) while a run wrote its files; the last good checkpoint is kept."""
