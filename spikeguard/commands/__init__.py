"""The commands of the command line, one family per module. Each parses its flags, calls the layers below
and prints what they return; the policies (defaults, checks, what a resumed run may change) live beside the
configurations they belong to. spikeguard.cli gathers them into one typer app.

Every module here loads without PyTorch, so a bad flag is refused before the heavy import.
"""
