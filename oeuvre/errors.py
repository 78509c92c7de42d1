"""Error types whose messages a user can act on; the CLIs print them without a traceback."""


class OeuvreError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""

    exit_code = 1


class ConfigError(OeuvreError):
    """A config file, key, value or override is wrong; the message names which and what was expected."""

    exit_code = 2


class BaseModelError(OeuvreError):
    """The base pipeline cannot be found, loaded, or is not SD 1.5 / SDXL."""

    exit_code = 2
