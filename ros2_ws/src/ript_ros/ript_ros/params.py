"""Declare a pydantic config as ROS 2 parameters, with descriptions, and read it back validated.

Nested sections become dotted names (`runtime.safety.workspace`), as in a ROS parameter
YAML file. Every parameter carries its field's one-line description (and its choices), so
`ros2 param describe` documents the node. Values are read back through the model: a bad
value is a `ConfigError` naming the parameter, never a half-configured node.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter

from ript_robot.config import ConfigError, ConfigModel, format_errors

_SCALARS = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
}
_ARRAYS = {
    int: ParameterType.PARAMETER_INTEGER_ARRAY,
    float: ParameterType.PARAMETER_DOUBLE_ARRAY,
    str: ParameterType.PARAMETER_STRING_ARRAY,
}


def _ros_type(annotation: Any) -> tuple[int, str]:
    """ROS parameter type of a field annotation, and a note on its allowed values."""
    if get_origin(annotation) is Literal:
        choices = get_args(annotation)
        return _SCALARS[type(choices[0])], "one of: " + ", ".join(map(str, choices))
    if get_origin(annotation) is list:
        return _ARRAYS[get_args(annotation)[0]], ""
    if annotation in _SCALARS:
        return _SCALARS[annotation], ""
    raise TypeError(f"no ROS parameter type for {annotation!r}; use bool, int, float, str, a Literal or a list")


def descriptors(model: type[BaseModel], prefix: str = "") -> Iterator[ParameterDescriptor]:
    """A descriptor (dotted name, type, description) for every leaf field of `model`."""
    hints = typing.get_type_hints(model)
    for name, field in model.model_fields.items():
        annotation, dotted = hints[name], f"{prefix}{name}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from descriptors(annotation, f"{dotted}.")
            continue
        ros_type, note = _ros_type(annotation)
        yield ParameterDescriptor(
            name=dotted, type=ros_type, description=field.description or "", additional_constraints=note
        )


def lookup(tree: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted name in a nested dict."""
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def declare(node: Node, model: type[ConfigModel]) -> None:
    """Declare every field of `model` on `node` with its default and description."""
    defaults = model().model_dump(mode="json")
    for d in descriptors(model):
        value = lookup(defaults, d.name)
        if d.type == ParameterType.PARAMETER_DOUBLE:
            value = float(value)
        elif d.type == ParameterType.PARAMETER_DOUBLE_ARRAY:
            value = [float(v) for v in value]
        if isinstance(value, list) and not value:  # typed by the field (rclpy would guess bytes); read() gives []
            value = Parameter.Type(d.type)
        node.declare_parameter(d.name, value, d)


def read(node: Node, model: type[ConfigModel]) -> Any:
    """The node's current parameters as a validated `model`; ConfigError names any bad parameter."""
    tree: dict[str, Any] = {}
    for d in descriptors(model):
        try:
            value = node.get_parameter(d.name).value
        except ParameterUninitializedException:
            value = []  # an empty list default that nothing overrode
        if not isinstance(value, (bool, int, float, str)):
            value = list(value)
        section = tree
        *parents, leaf = d.name.split(".")
        for part in parents:
            section = section.setdefault(part, {})
        section[leaf] = value
    try:
        return model.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(format_errors(model, exc, f"parameters of node {node.get_fully_qualified_name()}")) from None
