"""Declarative rules that decide how a message must be protected: encrypt, sign, TLS, block.

Protection chosen per message by each sender is protection forgotten on the one message that
mattered. A policy file states it once, reviewably, in TOML; :meth:`RuleSet.evaluate` applies
it to a message and returns a frozen :class:`Decision` that the sending code enforces and the
audit log records. (:class:`securemail.policy.Policy` is a different thing: the cryptographic
settings used once protection has been decided.)

How rules combine
    Every rule whose ``match`` holds applies, in file order, and the strictest requirement
    wins: ``block`` over everything (a blocked message is not sent at all); ``encrypt`` with
    a named format (``"smime"``, ``"pgp"``) over ``"any"`` over none; ``sign`` and
    ``password`` if any rule asks; the highest ``min_tls``; ``on_unreachable = "refuse"``
    over ``"split"``. The strictest-wins rule makes the result independent of how rules are
    ordered, so adding a rule can only tighten protection, never loosen it by accident. The
    one use of order: a rule with ``stop = true`` ends evaluation when it matches (later
    rules are not looked at), so an exemption goes *before* the rules it exempts from. Two
    rules that name different formats (one ``smime``, one ``pgp``) cannot both be met: the
    earlier rule's format is kept and :attr:`Decision.notes` says so.
    ``[default]`` applies only when no rule matched; a requirement for every message is a
    rule without ``match``.

Nothing of the message leaves evaluation: a :class:`Decision` names rules, detectors and
counts, never the text that matched, the Subject or attachment names.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from email.message import Message
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import InputError, PolicyFileError, RuleBlockedError
from . import _scan, _toml
from .detectors import Detector, detector_names, get_detector, keyword_pattern

__all__ = [
    "Action",
    "AttachmentCondition",
    "ContentCondition",
    "Decision",
    "EncryptFormat",
    "HeaderCondition",
    "Match",
    "MinTLS",
    "OnUnreachable",
    "Rule",
    "RuleMatch",
    "RuleSet",
    "ScanLimits",
]

EncryptFormat = Literal["smime", "pgp", "any"]
"""``any``: whichever format each recipient can read (decided with the recipient's keys)."""
MinTLS = Literal["opportunistic", "required", "required-verify"]
"""The TLS modes of :mod:`securemail.transport.config`, weakest first (``implicit`` TLS
satisfies ``required-verify``)."""
OnUnreachable = Literal["refuse", "split"]
"""When encryption is required and a recipient has no key: ``refuse`` the whole send, or
``split`` it (the others get it encrypted, only that recipient is refused)."""

_TLS_RANK: dict[str, int] = {"opportunistic": 0, "required": 1, "required-verify": 2}


# --- field checks ----------------------------------------------------------------------------


def _regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        reason = f"regular expression does not compile: {exc.msg} at position {exc.pos}"
        raise ValueError(reason) from None
    return pattern


def _detector(name: str) -> str:
    if name not in detector_names():
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(detector_names())}")
    return name


def _domain(pattern: str) -> str:
    if not pattern or "@" in pattern or any(char.isspace() for char in pattern):
        raise ValueError("a domain (or glob such as *.example.com) without @ or spaces")
    return pattern.lower().rstrip(".")


def _recipient(pattern: str) -> str:
    if "@" not in pattern or any(char.isspace() for char in pattern):
        raise ValueError("an address or glob with an @ (bare domains go in match.domains)")
    return _scan._normalized(pattern)


def _keyword(keyword: str) -> str:
    if not keyword.strip():
        raise ValueError("an empty keyword would match nothing")
    return keyword


_RULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.:-]{0,63}")
_HEADER_NAME = re.compile(r"[!-9;-~]+")


def _rule_name(name: str) -> str:
    if not _RULE_NAME.fullmatch(name):
        raise ValueError("1-64 letters, digits, spaces and _.:- (starting with a letter or digit)")
    return name


def _header_name(name: str) -> str:
    if not _HEADER_NAME.fullmatch(name):
        raise ValueError("a header field name (printable ASCII, no spaces or colon)")
    return name


Regex = Annotated[str, AfterValidator(_regex)]
DetectorName = Annotated[str, AfterValidator(_detector)]
DomainPattern = Annotated[str, AfterValidator(_domain)]
RecipientPattern = Annotated[str, AfterValidator(_recipient)]
Glob = Annotated[str, Field(min_length=1)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


# --- the schema ------------------------------------------------------------------------------


class HeaderCondition(_Model):
    """A header field ``name`` is present and, if given, its value equals ``value`` (ignoring
    case and surrounding space) or contains a match of ``regex``."""

    name: Annotated[str, AfterValidator(_header_name)]
    value: str | None = None
    regex: Regex | None = None

    @model_validator(mode="after")
    def _one_test(self) -> HeaderCondition:
        if self.value is not None and self.regex is not None:
            raise ValueError("give value or regex, not both")
        return self


class ContentCondition(_Model):
    """Matches of ``regex`` (searched as written; add ``(?i)`` to ignore case),
    ``detectors`` and ``keywords`` (whole words, any case), added up, reach ``min_matches``."""

    regex: list[Regex] = []
    detectors: list[DetectorName] = []
    keywords: list[Annotated[str, AfterValidator(_keyword)]] = []
    min_matches: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _something(self) -> ContentCondition:
        if not (self.regex or self.detectors or self.keywords):
            raise ValueError("content needs at least one of regex, detectors, keywords")
        return self


class AttachmentCondition(_Model):
    """Some attachment has a ``name`` and a ``content_type`` matching one of the globs given
    (any case) and a decoded size within ``min_size``..``max_size`` bytes. An empty table
    matches any message with an attachment."""

    name: list[Glob] = []
    content_type: list[Glob] = []
    min_size: int | None = Field(default=None, ge=0)
    max_size: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _range(self) -> AttachmentCondition:
        if None not in (self.min_size, self.max_size) and self.min_size > self.max_size:  # type: ignore[operator]
            raise ValueError("min_size is larger than max_size")
        return self


class Match(_Model):
    """When a rule applies: every condition given must hold (AND); within a list, one value
    is enough (OR). A rule without conditions matches every message."""

    recipients: list[RecipientPattern] | None = Field(default=None, min_length=1)
    domains: list[DomainPattern] | None = Field(default=None, min_length=1)
    external: bool | None = None
    """``true``: some recipient is outside ``internal_domains``; ``false``: there are
    recipients and all of them are inside."""
    headers: list[HeaderCondition] | None = Field(default=None, min_length=1)
    attachments: AttachmentCondition | None = None
    content: ContentCondition | None = None


class Action(_Model):
    """What a rule requires. Every field is optional; an empty action requires nothing
    (useful with ``stop = true`` to exempt messages from the rules after it)."""

    encrypt: EncryptFormat | None = None
    sign: bool = False
    min_tls: MinTLS | None = None
    block: bool = False
    reason: str | None = None
    """Why the message is blocked, for the sender; required with ``block``."""
    password: bool = False
    """Encrypt with a password (CMS PasswordRecipientInfo) for recipients without keys."""
    password_hint: str | None = None
    """How the recipient gets the password (never the password)."""
    on_unreachable: OnUnreachable | None = None
    """Default ``"refuse"``; only with ``encrypt`` or ``password``."""

    @model_validator(mode="after")
    def _consistent(self) -> Action:
        if self.block and not (self.reason and self.reason.strip()):
            raise ValueError("block = true needs a reason (it is shown to the sender)")
        if self.reason is not None and not self.block:
            raise ValueError("reason is only used with block = true")
        if self.password_hint is not None and not self.password:
            raise ValueError("password_hint is only used with password = true")
        if self.on_unreachable is not None and not self.encrypts:
            raise ValueError("on_unreachable needs encrypt or password: it says what to do then")
        if self.password and self.encrypt == "pgp":
            raise ValueError('password encryption is S/MIME (CMS); it excludes encrypt = "pgp"')
        return self

    @property
    def encrypts(self) -> bool:
        return self.encrypt is not None or self.password


class Rule(_Model):
    name: Annotated[str, AfterValidator(_rule_name)]
    """Shown in decisions and the audit log."""
    description: str = ""
    match: Match = Match()
    action: Action = Action()
    stop: bool = False
    """When this rule matches, do not evaluate the rules after it."""


class ScanLimits(_Model):
    """How much of a message content conditions read."""

    max_part_bytes: int = Field(default=4 * 1024 * 1024, ge=1, le=1024**3)
    """Decoded bytes read from the start of each part."""
    max_parts: int = Field(default=200, ge=1, le=100_000)
    """Leaf parts read (further parts are not scanned)."""


class _PolicyFile(_Model):
    internal_domains: list[DomainPattern] = []
    scan: ScanLimits = ScanLimits()
    default: Action | None = None
    rules: list[Rule] = []


# --- errors with lines -----------------------------------------------------------------------


def _model_in(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        if (model := _model_in(argument)) is not None:
            return model
    return None


def _fields_at(loc: _toml.Loc) -> list[str]:
    """The field names allowed at ``loc`` (a table of the policy file)."""
    model: type[BaseModel] | None = _PolicyFile
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model else None
        model = _model_in(field.annotation) if field else None
    return list(model.model_fields) if model else []


def _problem(error: Any, lines: dict[_toml.Loc, int]) -> tuple[int | None, str, str]:
    loc: _toml.Loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        reason = f"unknown field {loc[-1]!r}" + (
            f"; expected one of: {', '.join(allowed)}" if allowed else ""
        )
    elif error["type"] == "missing":
        reason = "required field missing"
    else:
        reason = str(error["msg"]).removeprefix("Value error, ")
    return _toml.line_of(lines, loc), _toml.field_path(loc), reason


def _file_error(source: str, problems: list[tuple[int | None, str, str]]) -> PolicyFileError:
    problems.sort(key=lambda problem: (problem[0] is None, problem[0] or 0))
    line, field, reason = problems[0]
    if len(problems) > 1:
        reason += f" (and {len(problems) - 1} more problem{'s' * (len(problems) > 2)})"
    return PolicyFileError(source, line, field, reason)


# --- decisions -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RuleMatch:
    """A rule that matched, and why: one reason per condition, naming what was tested and
    how often it matched, never what matched."""

    rule: str
    reasons: tuple[str, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Decision:
    """What the rules require of one message. Frozen; see the module docstring for how
    rules combine."""

    encrypt: EncryptFormat | None = None
    sign: bool = False
    min_tls: MinTLS | None = None
    block: bool = False
    block_rule: str | None = None
    block_reason: str | None = None
    password: bool = False
    password_hint: str | None = None
    on_unreachable: OnUnreachable = "refuse"
    """Only meaningful when :attr:`requires_encryption`."""
    matched: tuple[RuleMatch, ...] = ()
    default_applied: bool = False
    """No rule matched and the ``[default]`` action was used."""
    stopped_by: str | None = None
    """The rule with ``stop = true`` that ended evaluation."""
    notes: tuple[str, ...] = ()
    """Conflicts resolved along the way (two rules naming different formats)."""

    @property
    def requires_encryption(self) -> bool:
        return self.encrypt is not None or self.password

    def raise_if_blocked(self) -> None:
        """Raise :class:`~securemail.errors.RuleBlockedError` if a rule blocks the message."""
        if self.block:
            raise RuleBlockedError(self.block_rule or "?", self.block_reason or "")

    def explain(self) -> str:
        """The decision and the reasons for it, for people (several lines)."""
        lines = []
        if self.block:
            lines.append(f"block: yes, by rule {self.block_rule!r}: {self.block_reason}")
        if self.encrypt is not None:
            lines.append(f"encrypt: {self.encrypt}")
        if self.password:
            hint = f" (hint: {self.password_hint})" if self.password_hint else ""
            lines.append(f"password encryption: yes{hint}")
        if self.requires_encryption:
            lines.append(f"recipient without a key: {self.on_unreachable}")
        if self.sign:
            lines.append("sign: yes")
        if self.min_tls is not None:
            lines.append(f"minimum TLS: {self.min_tls}")
        if not lines:
            lines.append("no protection required")
        if self.matched:
            lines.append("matched rules:")
            for match in self.matched:
                lines.append(f"  {match.rule}: {'; '.join(match.reasons)}")
        elif self.default_applied:
            lines.append("no rule matched: the [default] action applies")
        else:
            lines.append("no rule matched")
        if self.stopped_by is not None:
            lines.append(f"rule {self.stopped_by!r} has stop = true: later rules not evaluated")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def to_audit(self) -> dict[str, object]:
        """Rule names and resulting actions for the audit log: JSON-ready, with nothing of
        the message (no content, no Subject, no recipients, no reasons) and no password
        hint."""
        return {
            "rules": [match.rule for match in self.matched],
            "default_applied": self.default_applied,
            "stopped_by": self.stopped_by,
            "encrypt": self.encrypt,
            "password": self.password,
            "on_unreachable": self.on_unreachable if self.requires_encryption else None,
            "sign": self.sign,
            "min_tls": self.min_tls,
            "block": self.block,
            "block_rule": self.block_rule,
            "block_reason": self.block_reason,
        }


def _combine(actions: list[tuple[str, Action]]) -> dict[str, Any]:
    """The strictest combination of ``actions`` (rule name, action), in file order."""
    result: dict[str, Any] = {}
    notes: list[str] = []
    encrypt_by: str | None = None
    unreachable: set[str] = set()
    for name, action in actions:
        current = result.get("encrypt")
        if action.encrypt is not None and current in (None, "any"):
            result["encrypt"] = action.encrypt
            encrypt_by = name
        elif action.encrypt not in (None, "any", current):
            notes.append(
                f"rule {name!r} asks for {action.encrypt} but rule {encrypt_by!r} asked for "
                f"{current} first; {current} is kept"
            )
        if action.encrypts:
            unreachable.add(action.on_unreachable or "refuse")
        if action.block and not result.get("block"):
            result.update(block=True, block_rule=name, block_reason=action.reason)
        if action.password:
            result["password"] = True
            if result.get("password_hint") is None:
                result["password_hint"] = action.password_hint
        if action.sign:
            result["sign"] = True
        strongest = result.get("min_tls")
        if action.min_tls is not None and (
            strongest is None or _TLS_RANK[action.min_tls] > _TLS_RANK[strongest]
        ):
            result["min_tls"] = action.min_tls
    result["on_unreachable"] = "split" if unreachable == {"split"} else "refuse"
    result["notes"] = tuple(notes)
    return result


# --- evaluation ------------------------------------------------------------------------------


def _count(pattern: re.Pattern[str]) -> Callable[[str], int]:
    return lambda text: sum(1 for _ in pattern.finditer(text))


def _detections(detector: Detector) -> Callable[[str], int]:
    return lambda text: sum(1 for _ in detector(text))


def _times(count: int) -> str:
    return "1 time" if count == 1 else f"{count} times"


class _Facts:
    """One message as the rules see it; the text is read once, on first need."""

    def __init__(self, message: Message, recipients: tuple[str, ...], scan: ScanLimits) -> None:
        self.message = message
        self.recipients = recipients
        self._scan = scan
        self._text: _scan.Text | None = None
        self._attachments: tuple[_scan.Attachment, ...] | None = None
        self._counts: dict[object, int] = {}

    @property
    def attachments(self) -> tuple[_scan.Attachment, ...]:
        if self._attachments is None:
            self._attachments = _scan.attachments(self.message)
        return self._attachments

    def count(self, key: object, counter: Callable[[str], int]) -> int:
        if key not in self._counts:
            if self._text is None:
                self._text = _scan.text(
                    self.message,
                    max_part_bytes=self._scan.max_part_bytes,
                    max_parts=self._scan.max_parts,
                )
            self._counts[key] = self._text.count(counter)
        return self._counts[key]


def _domain_matches(address: str, patterns: Iterable[str]) -> bool:
    domain = address.rpartition("@")[2]
    return any(fnmatchcase(domain, pattern) for pattern in patterns)


@dataclasses.dataclass(frozen=True)
class _Matcher:
    """A rule with its patterns compiled."""

    rule: Rule
    internal_domains: tuple[str, ...]
    keywords: re.Pattern[str] | None
    regexes: tuple[re.Pattern[str], ...]
    header_regexes: tuple[re.Pattern[str] | None, ...]

    @classmethod
    def compile(cls, rule: Rule, internal_domains: tuple[str, ...]) -> _Matcher:
        content = rule.match.content
        headers = rule.match.headers or []
        return cls(
            rule=rule,
            internal_domains=internal_domains,
            keywords=keyword_pattern(content.keywords) if content and content.keywords else None,
            regexes=tuple(re.compile(pattern) for pattern in (content.regex if content else ())),
            header_regexes=tuple(re.compile(h.regex) if h.regex else None for h in headers),
        )

    def reasons(self, facts: _Facts) -> tuple[str, ...] | None:
        """Why the rule matches ``facts``, or ``None`` if it does not. Cheap conditions are
        tested first; the text is read only if they all hold."""
        match = self.rule.match
        reasons: list[str] = []
        tests = (self._recipients, self._domains, self._external, self._headers)
        for test in (*tests, self._attachments, self._content):
            found = test(match, facts)
            if found is None:
                return None
            reasons += found
        return tuple(reasons) or ("matches every message",)

    @staticmethod
    def _listed(addresses: list[str], what: str) -> list[str]:
        more = f" (and {len(addresses) - 1} more)" if len(addresses) > 1 else ""
        return [f"recipient {addresses[0]}{more} {what}"]

    def _recipients(self, match: Match, facts: _Facts) -> list[str] | None:
        if match.recipients is None:
            return []
        hits = [
            r
            for r in facts.recipients
            if any(fnmatchcase(r.lower(), p.lower()) for p in match.recipients)
        ]
        return self._listed(hits, "matches match.recipients") if hits else None

    def _domains(self, match: Match, facts: _Facts) -> list[str] | None:
        if match.domains is None:
            return []
        hits = [r for r in facts.recipients if _domain_matches(r, match.domains)]
        return self._listed(hits, "is in match.domains") if hits else None

    def _external(self, match: Match, facts: _Facts) -> list[str] | None:
        if match.external is None:
            return []
        outside = [r for r in facts.recipients if not _domain_matches(r, self.internal_domains)]
        if match.external:
            return self._listed(outside, "is outside the internal domains") if outside else None
        if outside or not facts.recipients:
            return None
        return ["every recipient is inside the internal domains"]

    def _headers(self, match: Match, facts: _Facts) -> list[str] | None:
        if match.headers is None:
            return []
        for index, (condition, pattern) in enumerate(
            zip(match.headers, self.header_regexes, strict=True)
        ):
            for value in _scan.header_values(facts.message, condition.name):
                if pattern is not None:
                    found = pattern.search(value) is not None
                elif condition.value is not None:
                    found = value.strip().lower() == condition.value.strip().lower()
                else:
                    found = True
                if found:
                    return [f"header {condition.name} matches match.headers[{index}]"]
        return None

    def _attachments(self, match: Match, facts: _Facts) -> list[str] | None:
        condition = match.attachments
        if condition is None:
            return []
        for number, attachment in enumerate(facts.attachments, start=1):
            name = (attachment.filename or "").lower()
            if condition.name and not any(fnmatchcase(name, g.lower()) for g in condition.name):
                continue
            kind = attachment.content_type
            if condition.content_type and not any(
                fnmatchcase(kind, g.lower()) for g in condition.content_type
            ):
                continue
            if condition.min_size is not None and attachment.size < condition.min_size:
                continue
            if condition.max_size is not None and attachment.size > condition.max_size:
                continue
            return [f"attachment {number} ({kind}, {attachment.size} bytes) matches"]
        return None

    def _content(self, match: Match, facts: _Facts) -> list[str] | None:
        condition = match.content
        if condition is None:
            return []
        found: list[tuple[str, int]] = []
        for name in condition.detectors:
            counted = facts.count(("detector", name), _detections(get_detector(name)))
            found.append((f"detector {name}", counted))
        for index, pattern in enumerate(self.regexes):
            found.append((f"regex[{index}]", facts.count(("regex", pattern), _count(pattern))))
        if self.keywords is not None:
            key = ("keywords", self.keywords.pattern)
            found.append(("keywords", facts.count(key, _count(self.keywords))))
        total = sum(count for _, count in found)
        if total < condition.min_matches:
            return None
        return [f"content: {what} matched {_times(count)}" for what, count in found if count]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RuleSet:
    """A validated policy file. Make one with :meth:`load` or :meth:`from_toml`."""

    source: str
    internal_domains: tuple[str, ...]
    rules: tuple[Rule, ...]
    default: Action | None = None
    scan: ScanLimits = dataclasses.field(default_factory=ScanLimits)
    _matchers: tuple[_Matcher, ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        matchers = tuple(_Matcher.compile(rule, self.internal_domains) for rule in self.rules)
        object.__setattr__(self, "_matchers", matchers)

    @classmethod
    def load(cls, path: str | Path) -> RuleSet:
        """Read and check a policy file (UTF-8 TOML)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise PolicyFileError(str(path), None, "", "not UTF-8 text") from None
        except OSError as exc:
            reason = f"cannot read it: {exc.strerror or type(exc).__name__}"
            raise PolicyFileError(str(path), None, "", reason) from None
        return cls.from_toml(text, source=str(path))

    @classmethod
    def from_toml(cls, text: str, *, source: str = "<string>") -> RuleSet:
        """Check a policy given as TOML text; ``source`` names it in errors.

        Raises :class:`~securemail.errors.PolicyFileError` naming the line and the field.
        """
        data = _toml.parse(text, source)
        try:
            parsed = _PolicyFile.model_validate(data)
        except ValidationError as exc:
            lines = _toml.key_lines(text)
            problems = [_problem(error, lines) for error in exc.errors(include_url=False)]
            raise _file_error(source, problems) from None
        seen: set[str] = set()
        for index, rule in enumerate(parsed.rules):
            if rule.name in seen:
                loc = ("rules", index, "name")
                line = _toml.line_of(_toml.key_lines(text), loc)
                reason = f"another rule is already named {rule.name!r}; names must be unique"
                raise PolicyFileError(source, line, _toml.field_path(loc), reason)
            seen.add(rule.name)
        return cls(
            source=source,
            internal_domains=tuple(parsed.internal_domains),
            rules=tuple(parsed.rules),
            default=parsed.default,
            scan=parsed.scan,
        )

    def evaluate(
        self, message: Message | bytes, *, recipients: Iterable[str] | None = None
    ) -> Decision:
        """Decide how ``message`` must be protected.

        ``message`` is an :class:`~email.message.EmailMessage` (a built
        :class:`~securemail.compose.Message` contributes its Bcc) or raw RFC 5322 bytes.
        ``recipients`` replaces the envelope recipients read from To, Cc and Bcc. Never
        raises on odd content: what cannot be read is not matched.
        """
        if not isinstance(message, Message | bytes | bytearray):
            raise InputError("evaluate() takes an email.message.EmailMessage or bytes")
        parsed = _scan.parse(message)
        facts = _Facts(parsed, _scan.recipients(parsed, recipients), self.scan)
        matched: list[RuleMatch] = []
        actions: list[tuple[str, Action]] = []
        stopped_by = None
        for matcher in self._matchers:
            reasons = matcher.reasons(facts)
            if reasons is None:
                continue
            matched.append(RuleMatch(matcher.rule.name, reasons))
            actions.append((matcher.rule.name, matcher.rule.action))
            if matcher.rule.stop:
                stopped_by = matcher.rule.name
                break
        default_applied = not matched and self.default is not None
        if default_applied and self.default is not None:
            actions.append(("[default]", self.default))
        return Decision(
            **_combine(actions),
            matched=tuple(matched),
            default_applied=default_applied,
            stopped_by=stopped_by,
        )
