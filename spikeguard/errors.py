class UserError(Exception):
    """An error the user caused (bad flag, missing data, wrong checkpoint): shown as one line, exit code 2."""
