"""The `mmneuron` subcommands, one module each, and the argument parsing they share."""


def key_values(pairs: list[str], option: str, form: str, command: str) -> dict[str, str]:
    """``KEY=VALUE`` arguments as a dict; a malformed one ends the command, naming the option."""
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise SystemExit(f"mmneuron {command}: {option} expects {form}, got {pair!r}")
        values[key] = value
    return values
