"""PII and secret scrubbing: each match is replaced by a typed placeholder (`<EMAIL>`, `<AWS_ACCESS_KEY>`, …).

Patterns are anchored on the shape of the real thing (key prefixes, Luhn-valid card numbers, parseable IP
addresses) rather than on loose digit runs, so that source code — version strings, slices, big constants,
`password = getpass()` — passes untouched. Secrets run before PII: a JWT or a key block contains text that
the email or phone patterns would otherwise split up.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

Replacer = Callable[[re.Match], str | None]  # the replacement, or None to leave the match as it is


@dataclass(frozen=True)
class Rule:
    kind: str
    pattern: re.Pattern
    check: Callable[[re.Match], bool] | None = None
    group: int = 0  # replace only this group (e.g. the value of `password = "..."`)
    every_group: bool = False  # replace each non-empty group that took part (a line naming several users)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_ok(m: re.Match) -> bool:
    digits = re.sub(r"[ -]", "", m.group(0))
    # Issuer prefixes (Visa, Mastercard, Amex, Discover, JCB, Diners) + Luhn: random 16-digit numbers pass Luhn
    # one time in ten, a known issuer prefix as well far less often.
    return 13 <= len(digits) <= 19 and bool(re.match(r"4|5[1-5]|2[2-7]|3[47]|6(?:011|5)|35|3[068]", digits)) and luhn_ok(digits)


def _ipv4_ok(m: re.Match) -> bool:
    return all(int(part) <= 255 for part in m.group(0).split(".")) and not m.group(0).startswith("0.")


def _ipv6_ok(m: re.Match) -> bool:
    text = m.group(0)
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    # `a[1::2]` and `std::x` parse as IPv6 too; real addresses have at least three groups.
    return sum(1 for g in text.split(":") if g) >= 3


def _phone_ok(m: re.Match) -> bool:
    return 8 <= sum(ch.isdigit() for ch in m.group(0)) <= 15


RULES: tuple[Rule, ...] = (
    Rule("PRIVATE_KEY", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----")),
    Rule("JWT", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    Rule("AWS_ACCESS_KEY", re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA)[0-9A-Z]{16}\b")),
    Rule("AWS_SECRET_KEY", re.compile(
        r"(?i:aws_?secret_?(?:access_?)?key)[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"), group=1),
    Rule("GITHUB_TOKEN", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b")),
    Rule("SLACK_TOKEN", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    Rule("STRIPE_KEY", re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}\b")),
    # Generic assignments: only a quoted literal, or an unquoted value mixing letters and digits — never a name
    # or a call (`password = getpass()`, `api_key=self.api_key`).
    Rule("SECRET", re.compile(
        r"(?i:\b(?:password|passwd|pwd|api[_-]?key|apikey|secret[_-]?key|client[_-]?secret|access[_-]?token|auth[_-]?token))"
        r"[\"']?\s*[:=]\s*(?:([\"'])([^\s\"']{6,})\1|((?=[^\s\"'()\[\],;]*\d)(?=[^\s\"'()\[\],;]*[A-Za-z])[^\s\"'()\[\],;.]{6,})(?![\w(.\[]))"),
        group=-1),
    # User names in authentication log lines (sshd, pam_unix, sudo, su), root included; one alternative per shape.
    # Before IPV4/IPV6: some shapes are recognised by the address that follows the name.
    Rule("USER", re.compile(
        r"\b(?:Failed|Accepted) [\w/-]+ for (?:invalid user )?(\S.{0,63}?) from "  # sshd
        r"|\bInvalid user (\S.{0,63}?) from "
        r"|\b(?:invalid|authenticating|from) user (\S+) (?=[0-9A-Fa-f.:]+ port \d)"  # closed by / Disconnected from
        r"|\binvalid user (\S+) \[preauth\]"
        r"|\bsession (?:opened|closed) for user ([^\s(]+)(?:\(uid=\d+\))?(?: by ([^\s(]+)\(uid=\d+\))?"  # pam_unix
        r"|\bauthentication failure; logname=(\S*) uid=\d* euid=\d* tty=\S* ruser=(\S*) rhost=\S*(?:\s+user=(\S+))?"
        r"|(?<![^\s:])([^\s:;]+) : (?:[^;\n]* ; )?TTY=\S+ ; PWD=(?:/home/([^/\s;]+))?[^;\n]* ; USER=([^\s;]+) ;"  # sudo
        r"|\(to ([^\s)]+)\) (\S+) on \S"),  # su
        every_group=True),
    Rule("EMAIL", re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b")),
    Rule("CARD", re.compile(r"(?<![\d-])(?:\d{4}[ -]){3}\d{1,7}(?![\d-])|(?<![\w.-])\d{13,19}(?!\w|\.\d)"), _card_ok),
    Rule("IPV6", re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"), _ipv6_ok),
    Rule("IPV4", re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]|\.\d)"), _ipv4_ok),
    Rule("PHONE", re.compile(
        r"(?<![\w+.-])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{2,4}){1,4}"
        r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4})(?![\w-]|\.\d)"), _phone_ok),
)
KINDS = tuple(r.kind for r in RULES)
# Chosen by name only: user names matter in logs, and the default output for web text and code stays as it was.
OPT_IN_KINDS = ("USER",)
DEFAULT_KINDS = tuple(k for k in KINDS if k not in OPT_IN_KINDS)


def placeholder(kind: str) -> str:
    return f"<{kind}>"


def scrub(text: str, kinds: tuple[str, ...] | None = None) -> tuple[str, Counter]:
    """The text with every match replaced by its placeholder, and the count of replacements per kind.
    `kinds=None` means DEFAULT_KINDS (every kind but the opt-in ones)."""
    counts: Counter = Counter()
    kinds = DEFAULT_KINDS if kinds is None else kinds
    for rule in RULES:
        if rule.kind not in kinds:
            continue
        text = rule.pattern.sub(_replacer(rule, counts), text)
    return text, counts


def _replacer(rule: Rule, counts: Counter) -> Callable[[re.Match], str]:
    def replace(m: re.Match) -> str:
        if rule.check is not None and not rule.check(m):
            return m.group(0)
        if rule.every_group:
            return _replace_groups(m, rule.kind, counts)
        group = rule.group if rule.group >= 0 else next(i for i in range(m.re.groups, 0, -1) if m.group(i) is not None)
        counts[rule.kind] += 1
        if group == 0:
            return placeholder(rule.kind)
        start, end = m.start(group) - m.start(0), m.end(group) - m.start(0)
        whole = m.group(0)
        return whole[:start] + placeholder(rule.kind) + whole[end:]

    return replace


def _replace_groups(m: re.Match, kind: str, counts: Counter) -> str:
    whole, out, at = m.group(0), [], 0
    for i in range(1, m.re.groups + 1):
        if m.group(i):
            start, end = m.start(i) - m.start(0), m.end(i) - m.start(0)
            out += [whole[at:start], placeholder(kind)]
            at = end
            counts[kind] += 1
    return "".join(out) + whole[at:]
