"""Errors meant for people: each says what is wrong and what to do about it.

Raised before any compute where possible (bad config, missing data); `main` prints them
without a traceback.
"""


class SynthjaxError(Exception):
    """Base class: an error whose message is written for the person running the job."""


class ConfigError(SynthjaxError):
    """A config field names an impossible value. The message names the field and the fix."""

    def __init__(self, field: str, problem: str, fix: str):
        self.field = field
        super().__init__(f"config field `{field}`: {problem}. Fix: {fix}")


class DataNotFoundError(SynthjaxError):
    """Raw data is missing: the message says where to download it and where to put it."""


class Preempted(SynthjaxError):
    """The job was asked to stop (SIGTERM / Ctrl-C); a checkpoint was saved first."""
