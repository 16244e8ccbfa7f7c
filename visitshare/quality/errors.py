"""Errors of the quality stage, importable without loading Great Expectations."""


class SuiteError(ValueError):
    """A suite file that cannot be used; the message names the file and the rule."""


class QualityError(RuntimeError):
    """The suite could not be evaluated (e.g. an expectation raised); nothing was written."""
