"""A small subset of CEL, enough for the usual `x-kubernetes-validations` rules.

Supported: literals, `self`/`oldSelf`, field access and indexing, `has()`, `size()`,
comparisons, `in`, arithmetic, `&&`/`||`/`!`, `?:`, lists and the string methods
`startsWith`/`endsWith`/`contains`/`matches`, and the `all`/`exists`/`exists_one` macros.
Anything else raises `Unsupported` when parsed, so the caller can skip (and list) the rule
rather than guess. Runtime errors (a missing key, a wrong type) raise `EvaluationError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any


class Unsupported(ValueError):
    """The expression uses CEL the sandbox does not implement."""


class EvaluationError(ValueError):
    """The expression could not be evaluated on this object (CEL would report an error)."""


_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+\.\d+|\d+)(?P<unsigned>[uU])?|(?P<str>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')"
    r"|(?P<id>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>==|!=|<=|>=|&&|\|\||[-+*/%<>!?:.,()\[\]{}]))"
)

Node = tuple[Any, ...]


@dataclass
class _Tokens:
    items: list[tuple[str, Any]]
    position: int = 0

    def peek(self) -> tuple[str, Any]:
        return self.items[self.position] if self.position < len(self.items) else ("end", None)

    def take(self) -> tuple[str, Any]:
        token = self.peek()
        self.position += 1
        return token

    def accept(self, op: str) -> bool:
        if self.peek() == ("op", op):
            self.position += 1
            return True
        return False

    def expect(self, op: str) -> None:
        if not self.accept(op):
            raise Unsupported(f"expected {op!r} at token {self.position}")


def _tokenize(text: str) -> _Tokens:
    items: list[tuple[str, Any]] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None:
            raise Unsupported(f"unexpected character at {position}: {text[position:][:10]!r}")
        position = match.end()
        if match.group("num") is not None:
            raw = match.group("num")
            items.append(("lit", float(raw) if "." in raw else int(raw)))
        elif match.group("str") is not None:
            raw = match.group("str")[1:-1]
            items.append(("lit", raw.encode().decode("unicode_escape")))
        elif match.group("id") is not None:
            word = match.group("id")
            constants = {"true": True, "false": False, "null": None}
            items.append(("lit", constants[word]) if word in constants else ("id", word))
        else:
            items.append(("op", match.group("op")))
    return _Tokens(items)


@lru_cache(maxsize=256)
def compile_rule(text: str) -> Node:
    """Parse a rule into an AST; raises `Unsupported` for CEL outside the subset."""
    tokens = _tokenize(text)
    node = _expression(tokens)
    if tokens.peek()[0] != "end":
        raise Unsupported(f"unexpected trailing input at token {tokens.position}")
    _check_functions(node)
    return node


_FUNCTIONS = frozenset(
    {"has", "size", "startsWith", "endsWith", "contains", "matches", "all", "exists", "exists_one"}
)


def _check_functions(node: Any) -> None:
    if isinstance(node, tuple):
        if node and node[0] == "call" and node[1] not in _FUNCTIONS:
            raise Unsupported(f"function {node[1]} is not supported")
        for part in node[1:]:
            _check_functions(part)
    elif isinstance(node, list):
        for part in node:
            _check_functions(part)


def _expression(tokens: _Tokens) -> Node:
    condition = _binary(tokens, 0)
    if tokens.accept("?"):
        when_true = _expression(tokens)
        tokens.expect(":")
        return ("cond", condition, when_true, _expression(tokens))
    return condition


_PRECEDENCE = [
    ("||",),
    ("&&",),
    ("==", "!=", "<", "<=", ">", ">=", "in"),
    ("+", "-"),
    ("*", "/", "%"),
]


def _binary(tokens: _Tokens, level: int) -> Node:
    if level == len(_PRECEDENCE):
        return _unary(tokens)
    left = _binary(tokens, level + 1)
    while True:
        kind, value = tokens.peek()
        op = value if kind == "op" or (kind == "id" and value == "in") else None
        if op not in _PRECEDENCE[level]:
            return left
        tokens.take()
        left = ("bin", op, left, _binary(tokens, level + 1))


def _unary(tokens: _Tokens) -> Node:
    if tokens.accept("!"):
        return ("not", _unary(tokens))
    if tokens.accept("-"):
        return ("neg", _unary(tokens))
    return _member(tokens)


def _arguments(tokens: _Tokens) -> list[Node]:
    args: list[Node] = []
    if tokens.accept(")"):
        return args
    while True:
        args.append(_expression(tokens))
        if tokens.accept(")"):
            return args
        tokens.expect(",")


def _member(tokens: _Tokens) -> Node:
    node = _primary(tokens)
    while True:
        if tokens.accept("."):
            kind, name = tokens.take()
            if kind != "id":
                raise Unsupported("expected a field name after '.'")
            if tokens.accept("("):
                node = ("call", name, node, _arguments(tokens))
            else:
                node = ("field", node, name)
        elif tokens.accept("["):
            index = _expression(tokens)
            tokens.expect("]")
            node = ("index", node, index)
        else:
            return node


def _primary(tokens: _Tokens) -> Node:
    kind, value = tokens.take()
    if kind == "lit":
        return ("lit", value)
    if kind == "id":
        if tokens.accept("("):
            return ("call", value, None, _arguments(tokens))
        return ("var", value)
    if value == "(":
        node = _expression(tokens)
        tokens.expect(")")
        return node
    if value == "[":
        items: list[Node] = []
        if not tokens.accept("]"):
            while True:
                items.append(_expression(tokens))
                if tokens.accept("]"):
                    break
                tokens.expect(",")
        return ("list", items)
    raise Unsupported(f"unexpected token {value!r}")


def evaluate(node: Node, variables: dict[str, Any]) -> Any:
    """Evaluate a compiled rule; raises `EvaluationError` where CEL would report an error."""
    tag = node[0]
    if tag == "lit":
        return node[1]
    if tag == "var":
        if node[1] not in variables:
            raise EvaluationError(f"undeclared reference to {node[1]!r}")
        return variables[node[1]]
    if tag == "list":
        return [evaluate(item, variables) for item in node[1]]
    if tag == "field":
        target = evaluate(node[1], variables)
        if not isinstance(target, dict) or node[2] not in target:
            raise EvaluationError(f"no such key: {node[2]}")
        return target[node[2]]
    if tag == "index":
        return _index(evaluate(node[1], variables), evaluate(node[2], variables))
    if tag == "not":
        return not _boolean(evaluate(node[1], variables))
    if tag == "neg":
        return -_number(evaluate(node[1], variables))
    if tag == "cond":
        branch = node[2] if _boolean(evaluate(node[1], variables)) else node[3]
        return evaluate(branch, variables)
    if tag == "bin":
        return _binary_op(node[1], node[2], node[3], variables)
    if tag == "call":
        return _call(node[1], node[2], node[3], variables)
    raise Unsupported(f"unknown node {tag}")


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise EvaluationError("no matching overload: expected bool")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EvaluationError("no matching overload: expected a number")
    return value


def _index(target: Any, key: Any) -> Any:
    if isinstance(target, list) and isinstance(key, int) and 0 <= key < len(target):
        return target[key]
    if isinstance(target, dict) and key in target:
        return target[key]
    raise EvaluationError(f"no such key: {key}")


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: bool(a < b),
    "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b),
    ">=": lambda a, b: bool(a >= b),
}


def _binary_op(op: str, left: Node, right: Node, variables: dict[str, Any]) -> Any:
    if op in ("&&", "||"):
        # CEL's logical operators are commutative over errors; short-circuit is close enough.
        first = _boolean(evaluate(left, variables))
        if (op == "&&" and not first) or (op == "||" and first):
            return first
        return _boolean(evaluate(right, variables))
    a, b = evaluate(left, variables), evaluate(right, variables)
    if op == "==":
        return bool(a == b)
    if op == "!=":
        return bool(a != b)
    if op == "in":
        if not isinstance(b, list | dict):
            raise EvaluationError("no matching overload for 'in'")
        return a in b
    if op in _COMPARE:
        if type(a) is not type(b) and not (
            isinstance(a, int | float) and isinstance(b, int | float)
        ):
            raise EvaluationError(f"no matching overload for '{op}'")
        return _COMPARE[op](a, b)
    if op == "+" and isinstance(a, str) and isinstance(b, str):
        return a + b
    if op == "+" and isinstance(a, list) and isinstance(b, list):
        return a + b
    x, y = _number(a), _number(b)
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    if y == 0:
        raise EvaluationError("division by zero")
    if op == "/":
        return int(x / y) if isinstance(x, int) and isinstance(y, int) else x / y
    return x % y


_MACROS = ("all", "exists", "exists_one")


def _call(name: str, target: Node | None, args: list[Node], variables: dict[str, Any]) -> Any:
    if name == "has" and target is None and len(args) == 1 and args[0][0] == "field":
        holder = evaluate(args[0][1], variables)
        return isinstance(holder, dict) and args[0][2] in holder
    if name in _MACROS and target is not None and len(args) == 2 and args[0][0] == "var":
        collection = evaluate(target, variables)
        if not isinstance(collection, list | dict):
            raise EvaluationError(f"{name} needs a list or map")
        results = [
            _boolean(evaluate(args[1], {**variables, args[0][1]: item})) for item in collection
        ]
        if name == "all":
            return all(results)
        if name == "exists":
            return any(results)
        return sum(results) == 1
    values = [evaluate(a, variables) for a in args]
    receiver = evaluate(target, variables) if target is not None else None
    if name == "size":
        subject = receiver if target is not None else (values[0] if values else None)
        if not isinstance(subject, str | list | dict):
            raise EvaluationError("no matching overload for size")
        return len(subject)
    if name in ("startsWith", "endsWith", "contains", "matches") and len(values) == 1:
        if not isinstance(receiver, str) or not isinstance(values[0], str):
            raise EvaluationError(f"no matching overload for {name}")
        if name == "startsWith":
            return receiver.startswith(values[0])
        if name == "endsWith":
            return receiver.endswith(values[0])
        if name == "contains":
            return values[0] in receiver
        return re.search(values[0], receiver) is not None
    raise Unsupported(f"function {name} is not supported")


def references_old_self(text: str) -> bool:
    """Transition rules mention `oldSelf`; Kubernetes checks them on update only."""
    return re.search(r"\boldSelf\b", text) is not None
