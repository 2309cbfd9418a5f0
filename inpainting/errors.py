"""The one exception type that means "the user asked for something impossible"."""


class UserError(ValueError):
  """A bad flag, config value or input file.

  Command-line entry points print its message as one line and exit with code 2; any other
  exception is a bug and keeps its traceback.
  """
