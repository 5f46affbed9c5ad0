"""The user pool's password policy, shown on forms and checked before Cognito is called. Pure.

Cognito's rules (AWS docs, "Adding user pool password requirements"): a minimum length (6-99,
default 8) and, each optional, at least one lower-case letter, upper-case letter, number, and
symbol from its list (`SYMBOLS`). Checking them here first gives the person a clear message at
once and costs no Cognito call; Cognito still checks (its answer wins).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SYMBOLS = frozenset("^$*.[]{}()?\"!@#%&/\\,><':;|_~`=+-")
#: Cognito refuses passwords longer than this (PasswordType).
MAX_LENGTH = 256


@dataclass(frozen=True)
class PasswordPolicy:
    minimum_length: int = 8
    require_lowercase: bool = True
    require_uppercase: bool = True
    require_numbers: bool = True
    require_symbols: bool = True

    @classmethod
    def from_describe_user_pool(cls, answer: dict[str, Any]) -> PasswordPolicy:
        """From a DescribeUserPool answer (`UserPool.Policies.PasswordPolicy`)."""
        raw = ((answer.get("UserPool") or {}).get("Policies") or {}).get("PasswordPolicy") or {}
        return cls(
            minimum_length=int(raw.get("MinimumLength", 8)),
            require_lowercase=bool(raw.get("RequireLowercase", True)),
            require_uppercase=bool(raw.get("RequireUppercase", True)),
            require_numbers=bool(raw.get("RequireNumbers", True)),
            require_symbols=bool(raw.get("RequireSymbols", True)),
        )

    def rules(self) -> list[str]:
        """The rules as short phrases, for the form's help text."""
        rules = [f"at least {self.minimum_length} characters"]
        for needed, phrase in (
            (self.require_lowercase, "a lower-case letter"),
            (self.require_uppercase, "an upper-case letter"),
            (self.require_numbers, "a number"),
            (self.require_symbols, "a symbol such as ! or #"),
        ):
            if needed:
                rules.append(phrase)
        return rules

    def problems(self, password: str) -> list[str]:
        """What `password` lacks, as phrases of `rules()`; empty when it passes."""
        missing = []
        if len(password) < self.minimum_length:
            missing.append(f"at least {self.minimum_length} characters")
        if len(password) > MAX_LENGTH:
            missing.append(f"at most {MAX_LENGTH} characters")
        for needed, present, phrase in (
            (self.require_lowercase, any(c.islower() for c in password), "a lower-case letter"),
            (self.require_uppercase, any(c.isupper() for c in password), "an upper-case letter"),
            (self.require_numbers, any(c.isdigit() for c in password), "a number"),
            (self.require_symbols, any(c in SYMBOLS for c in password), "a symbol such as ! or #"),
        ):
            if needed and not present:
                missing.append(phrase)
        if password != password.strip():
            missing.append("no spaces at the start or end")
        return missing
