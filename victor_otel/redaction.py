"""Redaction: secrets are replaced before anything is written or exported (log records, span attributes
and events, exception messages and stack traces).

One :class:`Redactor` is in force at a time (:func:`get_redactor`); ``setup_coordinator_logging`` puts
one with the user's patterns in force, and every exported span goes through it too.

>>> redact("calling https://api.example.com?api_key=abc123&q=7")
'calling https://api.example.com?api_key=[REDACTED]&q=7'
"""

from __future__ import annotations

import enum
import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from victor_otel.errors import VictorOtelConfigError

#: What a secret is replaced with.
REDACTED = "[REDACTED]"
_MAX_DEPTH = 8
_MAX_TEXT = 10_000

#: Key names whose values are secrets, matched at the end of the normalised key (``db_password``,
#: ``accessToken``, ``x-api-key``) but not inside a longer word (``max_tokens`` stays readable).
SECRET_KEY_SUFFIXES = (
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "accesskey",
    "access_key",
    "privatekey",
    "private_key",
    "secretkey",
    "secret_key",
    "authorization",
    "auth",
    "credential",
    "credentials",
    "cookie",
)
_KEY_NAMES = (
    r"password|passwd|passphrase|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|secret[_-]?key|authorization|auth|credentials?|cookie"
)
# One alternation for every default pattern; the groups ending in "keep" are written back unchanged.
# Compiled on first use (see _patterns): importing victor_otel stays cheap.
_DEFAULT_SOURCE = "|".join(
    (
        # password=..., "api_key": "...", Authorization: Bearer ... (the key is kept, the value goes)
        rf"(?P<kvkeep>(?i:{_KEY_NAMES})[\"']?[ \t]*[:=][ \t]*[\"']?)(?i:(?:bearer|basic|token)[ \t]+)?"
        r"[^\s\"',;&}]+",
        r"(?P<bearerkeep>(?i:bearer)[ \t]+)[A-Za-z0-9._~+/=-]{8,}",
        r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{16,}",  # OpenAI / Anthropic style API keys
        r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])",  # AWS access key IDs
        r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",  # JWTs
        r"(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})",  # GitHub tokens
        r"xox[abposr]-[A-Za-z0-9-]{10,}",  # Slack tokens
        r"AIza[0-9A-Za-z_-]{35}",  # Google API keys
        # passwords in URLs, up to the authority's last "@" (a password may contain "@" itself)
        r"(?P<urlkeep>://[^/\s:@]{1,256}:)[^/\s]{1,256}(?=@)",
        r"-----BEGIN [A-Z ]{0,20}PRIVATE KEY-----[\s\S]*?-----END [A-Z ]{0,20}PRIVATE KEY-----",
    )
)
_EMAIL_SOURCE = (
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}"
)


@functools.cache
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """The default secrets pattern and the e-mail pattern, compiled once, when a string first needs them."""
    return re.compile(_DEFAULT_SOURCE), re.compile(_EMAIL_SOURCE)


def _names_a_secret(s: str) -> bool:
    # Every key name of the key=value alternative contains one of these (lower() and `in` beat a regex).
    low = s.lower()
    return (
        "pass" in low
        or "pwd" in low
        or "secret" in low
        or "token" in low
        or "key" in low
        or "auth" in low
        or "credential" in low
        or "cookie" in low
    )


# The shortest match of the token alternatives ("bearer" + a space + 8, "xoxb-" + 10): below this
# length only the key=value and URL alternatives can match, and both need "=" or ":".
_SHORTEST_TOKEN_SECRET = 15


def _may_hold_token(s: str) -> bool:
    # A handful of substring tests (C speed) decide whether the regex has to run at all: every
    # alternative of the default pattern needs one of these substrings to match.
    return (
        "sk-" in s
        or "earer" in s
        or "EARER" in s
        or "AKIA" in s
        or "ASIA" in s
        or "eyJ" in s
        or "xox" in s
        or "AIza" in s
        or "PRIVATE KEY" in s
        or ("://" in s and "@" in s)
        or ("_" in s and ("gh" in s or "github_pat" in s))
        or (("=" in s or ":" in s) and _names_a_secret(s))
    )


def _keep_prefix(match: re.Match[str]) -> str:
    kept = match.group("kvkeep") or match.group("bearerkeep") or match.group("urlkeep")
    return REDACTED if kept is None else kept + REDACTED


def names_a_secret(key: str) -> bool:
    """Whether a field named ``key`` holds a secret: its normalised name ends with one of
    :data:`SECRET_KEY_SUFFIXES` (``db_password``, ``accessToken``, ``X-Api-Key``; not ``max_tokens``).

    >>> names_a_secret("X-Api-Key"), names_a_secret("max_tokens")
    (True, False)
    """
    secret = _SECRET_NAMES.get(key)
    if secret is None:
        secret = key.lower().replace("-", "_").endswith(SECRET_KEY_SUFFIXES)
        if len(_SECRET_NAMES) < 10_000:  # field names are bounded in sane code; stay bounded anyway
            _SECRET_NAMES[key] = secret
    return secret


_SECRET_NAMES: dict[str, bool] = {}


_SCOPED_FLAGS = ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"), (re.VERBOSE, "x"))


class Redactor:
    """Replaces secrets in text and in structured values before anything is written or exported.

    Default patterns: API keys (``sk-...``, AWS access key IDs, GitHub, Slack, Google keys, JWTs),
    bearer tokens, values after a secret key name (``password=``, ``"api_key": ...``,
    ``Authorization: ...``), passwords in URLs and PEM private keys. ``patterns``: more regular
    expressions whose whole match is replaced. ``callback``: a last ``str -> str`` step for every string
    (if it raises, the string is replaced whole: redaction fails closed). ``hash_emails``: replace
    e-mail addresses with ``[email:<16 hex of sha256(salt + address)>]``, stable for correlation.

    >>> r = Redactor(patterns=[r"ticket-\\d+"])
    >>> r.text("retry with Authorization: Bearer abcdefghijklmnop for ticket-42")
    'retry with Authorization: [REDACTED] for [REDACTED]'
    >>> r.value({"password": "hunter2", "max_tokens": 512, "note": "key sk-0123456789abcdefghij"})
    {'password': '[REDACTED]', 'max_tokens': 512, 'note': 'key [REDACTED]'}
    """

    __slots__ = ("_callback", "_defaults", "_email_salt", "_extended", "_user")

    def __init__(
        self,
        patterns: Iterable[str | re.Pattern[str]] = (),
        *,
        callback: Callable[[str], str] | None = None,
        hash_emails: bool = False,
        hash_salt: str = "",
        defaults: bool = True,
    ) -> None:
        sources: list[str] = []
        compiled: list[re.Pattern[str]] = []
        for pattern in patterns:
            source, flags = (pattern.pattern, pattern.flags) if isinstance(pattern, re.Pattern) else (pattern, 0)
            if not isinstance(source, str) or not source:
                raise VictorOtelConfigError(
                    f"redact_patterns: {pattern!r} is not valid; accepted: regular expressions (str or compiled)"
                )
            try:
                compiled.append(re.compile(source, flags))
            except re.error as exc:
                raise VictorOtelConfigError(
                    f"redact_patterns: {source!r} is not a valid regular expression ({exc})"
                ) from None
            # A compiled pattern's flags survive the alternation as scoped inline flags.
            scoped = "".join(letter for flag, letter in _SCOPED_FLAGS if flags & flag)
            sources.append(f"(?{scoped}:{source})")
        if callback is not None and not callable(callback):
            raise VictorOtelConfigError(f"redact_callback: {callback!r} is not valid; accepted: a str -> str callable")
        if not isinstance(hash_salt, str):
            raise VictorOtelConfigError(f"hash_salt: {hash_salt!r} is not valid; accepted: a string")
        try:
            self._user: tuple[re.Pattern[str], ...] = (re.compile("|".join(sources)),) if sources else ()
        except re.error:  # global inline flags, a group name used twice: apply them one after the other
            self._user = tuple(compiled)
        self._defaults = defaults
        self._callback = callback
        self._email_salt = hash_salt.encode("utf-8") if hash_emails else None
        self._extended = bool(self._user) or self._email_salt is not None or callback is not None

    def text(self, s: str) -> str:
        """``s`` with every secret replaced (by :data:`REDACTED`) and e-mails hashed when asked."""
        if self._defaults and (
            (
                len(s) < _SHORTEST_TOKEN_SECRET
                and ("=" in s or ":" in s)
                and (_names_a_secret(s) or ("://" in s and "@" in s))
            )
            or (len(s) >= _SHORTEST_TOKEN_SECRET and _may_hold_token(s))
        ):
            s = _patterns()[0].sub(_keep_prefix, s)
        if self._extended:
            for pattern in self._user:
                s = pattern.sub(REDACTED, s)
            if self._email_salt is not None and "@" in s:
                s = _patterns()[1].sub(self._hash_email, s)
            if self._callback is not None:
                try:
                    s = str(self._callback(s))
                except Exception:
                    return REDACTED
        return s

    def _hash_email(self, match: re.Match[str]) -> str:
        assert self._email_salt is not None
        digest = hashlib.sha256(self._email_salt + match.group(0).lower().encode("utf-8")).hexdigest()
        return f"[email:{digest[:16]}]"

    @staticmethod
    def secret_key(key: str) -> bool:
        """Whether a field named ``key`` holds a secret (its whole value is then redacted)."""
        return names_a_secret(key)

    def value(self, value: Any, key: str | None = None, depth: int = 0) -> Any:
        """``value`` redacted: by ``key`` name, strings by :meth:`text`, containers item by item.

        Mappings and named tuples are redacted by field name; a ``(name, value)`` pair whose name
        says it holds a secret (HTTP header lists such as ``[("Authorization", "Basic ...")]``, ASGI's
        byte pairs included) has its value redacted; sets become lists and enum members their values.

        >>> r = Redactor()
        >>> r.value([("Authorization", "Basic dXNlcjpwYXNz"), ("Accept", "json")])
        [['Authorization', '[REDACTED]'], ['Accept', 'json']]
        >>> r.value({"https://u:p@ss@host/x"})
        ['https://u:[REDACTED]@host/x']
        """
        if key is not None and names_a_secret(key):
            return REDACTED
        kind = type(value)
        if kind is str:
            return self.text(value)
        if value is None or kind is int or kind is float or kind is bool:
            return value
        if depth >= _MAX_DEPTH:
            return "<nested too deep>"
        if isinstance(value, Mapping):
            return {k: self.value(v, _key_name(k), depth + 1) for k, v in value.items()}
        if isinstance(value, enum.Enum):  # before str: a str-mixin member is rendered by its value
            return self.value(value.value, None, depth + 1)
        if isinstance(value, tuple) and hasattr(value, "_fields") and hasattr(value, "_asdict"):
            return self.value(value._asdict(), None, depth)  # a named tuple: its fields by name
        if isinstance(value, (list, tuple)):
            if len(value) == 2:
                name = _key_name(value[0])
                if name is not None and names_a_secret(name):
                    return [self.value(value[0], None, depth + 1), REDACTED]
            return [self.value(v, None, depth + 1) for v in value]
        if isinstance(value, (set, frozenset)):
            return [self.value(v, None, depth + 1) for v in value]
        if isinstance(value, str):
            return self.text(str(value))
        if isinstance(value, (bytes, bytearray)):
            return self.text(bytes(value[:_MAX_TEXT]).decode("utf-8", "backslashreplace"))
        return value  # rendered (and redacted) by the JSON encoder's default


def _key_name(key: object) -> str | None:
    """A mapping key or pair name as text, to be tested by :func:`names_a_secret`."""
    if type(key) is str:
        return key
    if isinstance(key, (bytes, bytearray)) and len(key) <= 256:
        return bytes(key).decode("latin-1")
    return key if isinstance(key, str) else None


_current = Redactor()


def redact(text: str) -> str:
    """``text`` redacted by the redactor in force (defaults, or what ``setup_coordinator_logging`` set).

    >>> redact("token=abc123 for user 7")
    'token=[REDACTED] for user 7'
    """
    return _current.text(text)


def get_redactor() -> Redactor:
    """The redactor in force for logs, for the span attributes victor_otel sets and for exported spans."""
    return _current


def use_redactor(redactor: Redactor | None) -> None:
    """Put ``redactor`` in force (``None``: the defaults again); ``setup_coordinator_logging`` calls it."""
    global _current
    _current = Redactor() if redactor is None else redactor


__all__ = ["REDACTED", "SECRET_KEY_SUFFIXES", "Redactor", "get_redactor", "names_a_secret", "redact", "use_redactor"]
