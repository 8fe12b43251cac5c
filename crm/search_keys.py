"""Search keys computed in Python and stored in indexed columns.

Core PostgreSQL only (no pg_trgm, no unaccent, so the embedded server and a
managed one behave the same): names are folded to plain lower-case ASCII, each
token also gets a phonetic key (Metaphone) so "Jon Smyth" finds "John Smith"
and a letter-set key (its letters sorted) so "Jonh Smtih" finds it too, and the
folded text feeds a ``simple`` full-text vector for prefix search.
"""

from __future__ import annotations

import itertools
import re
import unicodedata

import jellyfish

_TOKEN_RE = re.compile(r"[a-z0-9]+")


def fold(text: str) -> str:
    """Lower-case ASCII with accents removed: "José Núñez" -> "jose nunez"."""
    decomposed = unicodedata.normalize("NFKD", text or "")
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def display_name(given: str, family: str, organization: str) -> str:
    """How the customer is called on screens: an organisation's name, or the person's."""
    if organization and not (given or family):
        return organization.strip()
    return " ".join(p for p in (given, family) if p).strip()


def name_tokens(*parts: str) -> list[str]:
    tokens: list[str] = []
    for part in parts:
        tokens.extend(_TOKEN_RE.findall(fold(part)))
    return tokens


def phonetic_key(token: str) -> str:
    if token.isdigit():
        return token
    return jellyfish.metaphone(token) or token


def letter_set_key(token: str) -> str | None:
    """Two swapped letters leave a word's letters unchanged; Metaphone does not
    forgive that ("jonh" is JNH, "john" JN). Short words would collide too often."""
    if len(token) < 4 or token.isdigit():
        return None
    return "~" + "".join(sorted(token))


def token_keys(token: str) -> list[str]:
    keys = [phonetic_key(token)]
    letters = letter_set_key(token)
    if letters:
        keys.append(letters)
    return keys


def phonetic_keys(tokens: list[str]) -> list[str]:
    """Every key of every token, as stored in ``Customer.name_phonetic``."""
    return sorted({key for t in tokens if t for key in token_keys(t)})


MAX_ALTERNATIVE_TOKENS = 3


def query_key_sets(tokens: list[str]) -> list[list[str]]:
    """Sets of keys of which a matching name holds at least one whole set: each
    token may match by sound or by its letters (for the first three tokens;
    beyond them by sound, to keep the query small)."""
    choices = [
        token_keys(t) if i < MAX_ALTERNATIVE_TOKENS else [phonetic_key(t)] for i, t in enumerate(tokens) if t
    ]
    return [sorted(set(combo)) for combo in itertools.product(*choices)]


def sort_name(family: str, given: str, organization: str) -> str:
    """The folded name customers are ordered by: family name first."""
    if organization and not (family or given):
        return " ".join(name_tokens(organization))
    return " ".join(name_tokens(family, given))


def tsquery_for(text: str) -> str | None:
    """A ``to_tsquery('simple', ...)`` string matching every token as a prefix."""
    tokens = name_tokens(text)
    if not tokens:
        return None
    return " & ".join(f"{t}:*" for t in tokens)
