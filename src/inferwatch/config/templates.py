"""Alert matchers and action templates: the two small languages of an actions file.

Parsed when the configuration loads (so a bad matcher or placeholder is a ``file:key: message``
error) and used by the actions runner; pure string work, no I/O.

Label values come from whoever can make an alert fire, so where a value lands decides what it may
contain: in a URL every placeholder is percent-encoded for its part (a path segment or the query:
``../admin?x=`` stays inside its segment), and in a command a value that would start an argument
with ``-`` (and so be read as an option) is refused unless the action allows it or a literal
``--`` item comes before it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import quote


# --- matchers ----------------------------------------------------------------------------------

_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|(.*?))\s*$')


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str
    value: str
    regex: re.Pattern[str] | None = None

    def __call__(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        matched = self.regex.fullmatch(actual) is not None if self.regex else False
        return matched if self.op == "=~" else not matched

    def __str__(self) -> str:
        return f"{self.name}{self.op}{json.dumps(self.value)}"


def parse_matcher(text: str) -> Matcher:
    """``name="value"``, ``name!=value``, ``name=~"regex"``, ``name!~"regex"`` (Alertmanager's syntax;
    regexes are anchored). Raises ValueError saying what is wrong."""
    match = _MATCHER.match(str(text))
    if not match:
        raise ValueError(f"expected name=value, name!=value, name=~regex or name!~regex, got {text!r}")
    name, op, quoted, bare = match.groups()
    value = json.loads(f'"{quoted}"') if quoted is not None else bare
    regex = None
    if op in ("=~", "!~"):
        try:
            regex = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression {value!r} ({exc})") from None
    return Matcher(name, op, value, regex)


# --- templates ---------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}")
_NAME = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)\s*$")
SPECIAL_FIELDS = ("fingerprint", "status", "startsAt", "generatorURL")


class TemplateError(ValueError):
    pass


class Template:
    """``text`` with ``{{ name }}`` placeholders: a label, ``annotations.<name>``, or one of
    fingerprint, status, startsAt, generatorURL (``labels.<name>`` is a label too)."""

    def __init__(self, text: str):
        self.parts: list[tuple[bool, str]] = []   # (is a placeholder, literal text or the name)
        position = 0
        for match in _PLACEHOLDER.finditer(text):
            name = _NAME.match(match.group(1))
            if not name:
                raise TemplateError(f"{{{{{match.group(1)}}}}} is not a placeholder: use {{{{ label_name }}}}, "
                                    f"{{{{ annotations.name }}}} or one of {', '.join(SPECIAL_FIELDS)}")
            self.parts.append((False, text[position:match.start()]))
            self.parts.append((True, name.group(1)))
            position = match.end()
        rest = text[position:]
        if "{{" in rest or "}}" in rest:
            raise TemplateError(f"unbalanced '{{{{' or '}}}}' in {text!r}")
        self.parts.append((False, rest))

    def render(self, lookup: Callable[[str], str]) -> str:
        return "".join(lookup(value) if placeholder else value for placeholder, value in self.parts)

    @classmethod
    def compile_tree(cls, value: Any) -> Any:
        """Templates for every string in ``value`` (mappings, lists, scalars kept as they are)."""
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, dict):
            return {cls.compile_tree(k) if isinstance(k, str) else k: cls.compile_tree(v) for k, v in value.items()}
        if isinstance(value, list):
            return [cls.compile_tree(v) for v in value]
        return value

    @classmethod
    def render_tree(cls, value: Any, lookup: Callable[[str], str]) -> Any:
        if isinstance(value, Template):
            return value.render(lookup)
        if isinstance(value, dict):
            return {cls.render_tree(k, lookup): cls.render_tree(v, lookup) for k, v in value.items()}
        if isinstance(value, list):
            return [cls.render_tree(v, lookup) for v in value]
        return value


# --- URL and command templates -----------------------------------------------------------------


def _url_part(literal: str) -> str:
    """Which part of a URL the text after ``literal`` (the template's literal text so far) is in."""
    if "#" in literal:
        return "fragment"
    if "?" in literal:
        return "query"
    scheme_end = literal.find("://")
    start = scheme_end + 3 if scheme_end >= 0 else 0
    return "path" if "/" in literal[start:] else "authority"


class URLTemplate(Template):
    """A URL template whose placeholders are percent-encoded for the part of the URL they sit in.

    Every character but unreserved ones (letters, digits, ``-._~``) is encoded, so a value can
    neither leave its path segment (``/``, ``?``, ``#``) nor add query parameters (``&``, ``=``);
    a value that is a whole dot segment (``.`` or ``..``) is refused. Placeholders in the scheme,
    host or port are refused when the configuration loads: a label must not choose where the
    request (and its configured credentials) goes.
    """

    def __init__(self, text: str):
        super().__init__(text)
        self.url_parts: list[str] = []
        literal = ""
        for placeholder, value in self.parts:
            if not placeholder:
                literal += value
                continue
            part = _url_part(literal)
            if part == "authority":
                raise TemplateError(f"{{{{ {value} }}}} is in the URL's scheme, host or port: placeholders may "
                                    "only be in the path, the query or the fragment")
            self.url_parts.append(part)

    def render(self, lookup: Callable[[str], str]) -> str:
        out: list[str] = []
        parts = iter(self.url_parts)
        for placeholder, value in self.parts:
            if not placeholder:
                out.append(value)
                continue
            text = lookup(value)
            if next(parts) == "path" and text.strip(".") == "" and text:
                raise TemplateError(f"{value} = {text!r} would be a dot segment of the URL's path")
            out.append(quote(text, safe=""))
        return "".join(out)


def render_argv(items: list[Template], lookup: Callable[[str], str], *, allow_option_values: bool = False) -> list[str]:
    """A command's argv from its templates. An item that begins with a placeholder whose value
    starts with ``-`` would be read as an option: TemplateError, unless ``allow_option_values``
    or an earlier literal ``--`` item (the end of options) makes it an operand."""
    argv: list[str] = []
    operands = allow_option_values
    for item in items:
        text = item.render(lookup)
        begins_with_value = len(item.parts) > 1 and item.parts[0] == (False, "")
        if begins_with_value and text.startswith("-") and not operands:
            name = item.parts[1][1]
            raise TemplateError(f"{name} = {text[:40]!r} would be an option of the command: put a literal '--' "
                                "item before it or set allow_option_values: true")
        if item.parts == [(False, "--")]:
            operands = True
        argv.append(text)
    return argv
