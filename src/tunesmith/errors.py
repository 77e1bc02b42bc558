"""The TunesmithError family: user-facing errors the CLI prints without a traceback."""


class TunesmithError(Exception):
    """A user mistake (bad config, bad data, missing file) with a message that says how to fix it."""

    exit_code = 2


class ConfigError(TunesmithError):
    """The config file or an override is missing, malformed, unknown or contradictory."""


class DataError(TunesmithError):
    """A dataset is missing, unregistered, malformed or empty."""


class TemplateError(TunesmithError):
    """A chat template is unknown or cannot be applied to this tokenizer."""


class ModelError(TunesmithError):
    """A model or adapter cannot be found or loaded."""


class DependencyError(TunesmithError):
    """A feature needs a package or hardware that is not present."""
