"""Text from outside on its way to a terminal: names checked at input, everything escaped on output.

Names and tags are typed by people and shown in tables, so latscope accepts
only printable ones (`check_label`). Whatever comes from a file -- a store
written by another version or by hand, an import file, a forged packet --
can still hold newlines, escape sequences or megabytes: `printable` escapes
control characters before they reach a terminal, and `quote` also caps the
length of anything quoted in an error message.
"""

from __future__ import annotations

from latscope.errors import ConfigError

#: Longest name (--name, import --name) and tag latscope accepts, in characters.
MAX_NAME = 200
MAX_TAG = 64
MAX_TAGS = 32
#: Longest piece of foreign input an error message quotes.
QUOTE_LIMIT = 60


def printable(text: str) -> str:
    """``text`` with every non-printable character as a Python escape (\\n, \\x1b, \\u202e)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def terminal_safe(text: str) -> str:
    """Multi-line ``text`` with control characters other than newline and tab escaped."""
    return "\n".join("\t".join(printable(part) for part in line.split("\t")) for line in text.split("\n"))


def quote(text: object, limit: int = QUOTE_LIMIT) -> str:
    """``text`` quoted for an error message: escaped, and cut to ``limit`` characters with a note."""
    s = text if isinstance(text, str) else repr(text)
    cut = len(s) > limit
    body = printable(s[:limit])
    mark = "" if isinstance(text, (int, float)) else "'"
    return f"{mark}{body}{mark}" + (f"... ({len(s)} characters)" if cut else "")


def check_label(value: str, what: str, limit: int) -> str:
    """``value`` when it is printable and at most ``limit`` characters; ConfigError naming ``what`` otherwise."""
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be text")
    if len(value) > limit:
        raise ConfigError(f"{what}: {len(value)} characters, at most {limit} are allowed")
    if not value.isprintable():
        bad = next(c for c in value if not c.isprintable())
        raise ConfigError(f"{what}: {quote(value)} contains the non-printable character {repr(bad)[1:-1]}; "
                          "names and tags must be printable text")
    return value


def check_name(name: str, what: str = "--name") -> str:
    """A run name as given by a user: printable, at most MAX_NAME characters (may be empty)."""
    return check_label(name, what, MAX_NAME)


def check_tags(tags: tuple[str, ...] | list[str], what: str = "--tag") -> tuple[str, ...]:
    """Run tags as given by a user: at most MAX_TAGS, each printable, non-empty, without commas."""
    if len(tags) > MAX_TAGS:
        raise ConfigError(f"{len(tags)} tags given; at most {MAX_TAGS} are allowed")
    for tag in tags:
        check_label(tag, what, MAX_TAG)
        if not tag.strip() or "," in tag:
            raise ConfigError(f"{what}: {quote(tag)}: a tag must be non-empty and cannot contain a comma")
    return tuple(tags)
