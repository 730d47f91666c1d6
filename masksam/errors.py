"""Exception types raised at masksam's boundaries (files, checkpoints, datasets, command line).

Every message is one line that names the offending file or value and says how to fix it; the command
line prints that line without a traceback and exits non-zero.
"""


class MaskSamError(Exception):
    """Base class of every error masksam reports to a user."""


class CheckpointError(MaskSamError):
    """A weights or training checkpoint file is missing, unreadable, or made for another architecture."""


class DatasetError(MaskSamError):
    """A dataset folder, case file or dataset.json is missing or inconsistent."""


class ConfigError(MaskSamError):
    """A configuration file, preset name or option value is invalid."""


class Interrupted(Exception):
    """Ctrl-C stopped a command; the message says what was kept and the command that resumes (exit code 130).

    Not a :class:`MaskSamError`: code that reports and skips a failed case must not swallow an interrupt.
    """
