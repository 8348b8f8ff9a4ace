"""The policies part of the config: compiled policies, problems reported with their field
paths."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import re2

from extproc.config.schema import NAME
from extproc.config.v1 import config_pb2 as pb
from extproc.policy import phones
from extproc.policy.detectors import (
    BUILTIN,
    Detector,
    compile_pattern,
    custom_detector,
    phone_detector,
)
from extproc.policy.rules import Action, DenyRule, Limits, PiiRule, Policy

_ROLE_NAMES: dict[int, str] = {
    pb.SYSTEM: "system",
    pb.USER: "user",
    pb.ASSISTANT: "assistant",
    pb.TOOL: "tool",
}
_ACTIONS = {
    pb.PiiRule.REDACT: Action.REDACT,
    pb.PiiRule.MASK: Action.MASK,
    pb.PiiRule.BLOCK: Action.BLOCK,
    pb.PiiRule.ALLOW: Action.ALLOW,
}
_LENIENCIES = {
    pb.PhoneOptions.POSSIBLE: "possible",
    pb.PhoneOptions.VALID: "valid",
    pb.PhoneOptions.STRICT_GROUPING: "strict_grouping",
    pb.PhoneOptions.EXACT_GROUPING: "exact_grouping",
}
_LABEL = re.compile(r"^[A-Z][A-Z0-9]{0,23}$")
DEFAULT_MAX_MATCH_LENGTH = 128
# Custom detectors are usually short codes (employee ids, account numbers); a stream is
# held back this far for them unless the rule says otherwise.
DEFAULT_DETECTOR_MATCH_LENGTH = 32


def _roles(values: list[int]) -> frozenset[str]:
    return frozenset(_ROLE_NAMES[v] for v in values) if values else frozenset(_ROLE_NAMES.values())


@dataclass(frozen=True, slots=True)
class _Directions:
    request: bool = True  # the default: [request]
    response: bool = False
    tool_call: bool = False
    tool_result: bool = False


def _directions(values: list[int]) -> _Directions:
    if not values:
        return _Directions()
    return _Directions(
        request=pb.REQUEST in values,
        response=pb.RESPONSE in values,
        tool_call=pb.TOOL_CALL in values,
        tool_result=pb.TOOL_RESULT in values,
    )


def _keyword_pattern(keyword: str) -> str:
    """A whole-word match where the keyword starts or ends with a word character."""
    escaped = re2.escape(keyword)
    prefix = r"\b" if keyword[:1].isalnum() else ""
    suffix = r"\b" if keyword[-1:].isalnum() else ""
    return f"{prefix}{escaped}{suffix}"


def compile_policy(
    source: pb.Policy, path: str, problem: Callable[[str, str], None]
) -> Policy | None:
    ok = True
    if not NAME.match(source.name):
        problem(f"{path}.name", f'"{source.name}" is not a valid name')
        ok = False
    shadow = source.mode == pb.Policy.SHADOW
    deny: list[DenyRule] = []
    for index, rule in enumerate(source.deny):
        built = _deny_rule(rule, source.name, shadow, f"{path}.deny[{index}]", problem)
        ok = ok and built is not None
        if built is not None:
            deny.append(built)
    pii: list[PiiRule] = []
    for index, pii_source in enumerate(source.pii):
        pii_rule = _pii_rule(pii_source, source, shadow, f"{path}.pii[{index}]", problem)
        ok = ok and pii_rule is not None
        if pii_rule is not None:
            pii.append(pii_rule)
    limits = source.limits
    if limits.max_tokens and limits.default_max_tokens > limits.max_tokens:
        problem(f"{path}.limits.default_max_tokens", "is above limits.max_tokens")
        ok = False
    if not ok:
        return None
    return Policy(
        name=source.name,
        shadow=shadow,
        deny=tuple(deny),
        pii=tuple(pii),
        limits=Limits(
            max_messages=limits.max_messages,
            max_prompt_tokens=limits.max_prompt_tokens,
            max_tokens=limits.max_tokens,
            default_max_tokens=limits.default_max_tokens,
            max_request_bytes=limits.max_request_bytes,
        ),
        prepend=tuple(source.system_prompt.prepend),
        append=tuple(source.system_prompt.append),
    )


def _deny_rule(
    rule: pb.DenyRule, policy: str, shadow: bool, path: str, problem: Callable[[str, str], None]
) -> DenyRule | None:
    if not NAME.match(rule.name):
        problem(f"{path}.name", f'"{rule.name}" is not a valid rule name')
        return None
    if not rule.patterns and not rule.keywords:
        problem(path, "set patterns, keywords, or both")
        return None
    alternatives: list[str] = []
    ok = True
    for index, pattern in enumerate(rule.patterns):
        where = f"{path}.patterns[{index}]"
        try:
            compile_pattern(pattern)
        except re2.error as error:
            problem(where, f"RE2 cannot compile this pattern: {_reason(error)}")
            ok = False
        else:
            try:
                # The rule's patterns are joined as alternatives: one that ends inside a
                # \Q quote would quote the ones after it.
                compile_pattern(f"(?:{pattern})")
            except re2.error:
                problem(where, "ends inside \\Q: close the quote with \\E")
                ok = False
        alternatives.append(f"(?:{pattern})")
    for index, keyword in enumerate(rule.keywords):
        if not keyword.strip():
            problem(f"{path}.keywords[{index}]", "is empty")
            ok = False
        alternatives.append(_keyword_pattern(keyword))
    if not ok:
        return None
    directions = _directions(list(rule.apply_to))
    keywords = tuple(k if rule.case_sensitive else k.lower() for k in rule.keywords)
    return DenyRule(
        name=rule.name,
        policy=policy,
        shadow=shadow,
        regex=compile_pattern("|".join(alternatives), case_sensitive=rule.case_sensitive),
        keywords=keywords,
        case_sensitive=rule.case_sensitive,
        roles=_roles(list(rule.roles)),
        request=directions.request,
        response=directions.response,
        tool_call=directions.tool_call,
        tool_result=directions.tool_result,
        max_length=rule.max_match_length or DEFAULT_MAX_MATCH_LENGTH,
        has_patterns=bool(rule.patterns),
    )


def _pii_rule(
    rule: pb.PiiRule,
    policy: pb.Policy,
    shadow: bool,
    path: str,
    problem: Callable[[str, str], None],
) -> PiiRule | None:
    if rule.detector:
        if rule.name or rule.pattern:
            problem(path, "set either detector (built-in) or name and pattern (custom), not both")
            return None
        found = BUILTIN.get(rule.detector)
        if found is None:
            known = ", ".join(BUILTIN)
            problem(f"{path}.detector", f'no built-in detector "{rule.detector}" (known: {known})')
            return None
        detector = found
        if rule.HasField("phone"):
            if rule.detector != "phone":
                problem(f"{path}.phone", "applies to detector phone only")
                return None
            configured = _phone(rule.phone, f"{path}.phone", problem)
            if configured is None:
                return None
            detector = configured
    else:
        if not rule.name or not rule.pattern:
            problem(path, "set detector (built-in), or name and pattern (custom)")
            return None
        if not NAME.match(rule.name) or rule.name in BUILTIN:
            problem(f"{path}.name", f'"{rule.name}" is not a valid custom detector name')
            return None
        label = rule.label or rule.name.upper().replace("-", "").replace("_", "").replace(".", "")
        if not _LABEL.match(label):
            problem(f"{path}.label", f'"{label}" is not a valid label (A-Z and digits)')
            return None
        try:
            detector = custom_detector(
                rule.name,
                rule.pattern,
                label,
                rule.max_match_length or DEFAULT_DETECTOR_MATCH_LENGTH,
            )
        except re2.error as error:
            problem(f"{path}.pattern", f"RE2 cannot compile this pattern: {_reason(error)}")
            return None
    directions = _directions(list(rule.apply_to))
    return PiiRule(
        detector=detector,
        action=_ACTIONS.get(rule.action, Action.REDACT),
        policy=policy.name,
        shadow=shadow,
        restore=policy.restore_redacted,
        roles=_roles(list(rule.roles)),
        request=directions.request,
        response=directions.response,
        tool_call=directions.tool_call,
        tool_result=directions.tool_result,
    )


def _phone(
    options: pb.PhoneOptions, path: str, problem: Callable[[str, str], None]
) -> Detector | None:
    regions = tuple(options.regions) or phones.DEFAULT_REGIONS
    unknown = [r for r in regions if not phones.supported(r)]
    if unknown:
        problem(f"{path}.regions", f"no numbering plan for {', '.join(unknown)}")
        return None
    return phone_detector(
        tuple(dict.fromkeys(regions)),
        _LENIENCIES.get(options.leniency, phones.DEFAULT_LENIENCY),
        _LENIENCIES.get(options.international_leniency, phones.DEFAULT_INTERNATIONAL_LENIENCY),
    )


def _reason(error: Exception) -> str:
    message = error.args[0] if error.args else error
    return message.decode() if isinstance(message, bytes) else str(message)
