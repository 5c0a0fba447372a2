class UserError(Exception):
    """An error the user caused (bad flag, missing data, wrong checkpoint): shown as one line, exit code 2."""


def one_line(error: BaseException) -> str:
    """An exception as "Type: message" on one line, for UserErrors that report a library's failure."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
