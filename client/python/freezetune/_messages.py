"""Requests from dicts: the protobuf JSON mapping, with errors that name the field.

protobuf's json_format.ParseDict raises ParseError with the message type's
name; callers get InvalidArgument("job.hyperparameters.epoch: unknown field;
did you mean 'epochs'?") instead, like the server's INVALID_ARGUMENT messages.
"""
import difflib
from typing import Any, Type, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from freezetune.errors import InvalidArgument
import grpc

M = TypeVar("M", bound=Message)

# Messages whose JSON form is not an object of their fields.
_WELL_KNOWN = ("google.protobuf.",)


def _check_fields(value: Any, desc: Descriptor, path: str) -> None:
    if not isinstance(value, dict) or desc.full_name.startswith(_WELL_KNOWN):
        return
    by_name = {}
    for f in desc.fields:
        by_name[f.json_name] = f
        by_name[f.name] = f
    for key, item in value.items():
        field = by_name.get(key)
        if field is None:
            close = difflib.get_close_matches(str(key), [f.json_name for f in desc.fields], n=1)
            hint = "; did you mean '%s'?" % close[0] if close else ""
            raise InvalidArgument(grpc.StatusCode.INVALID_ARGUMENT,
                                  "%s.%s: unknown field%s" % (path, key, hint))
        if field.type != FieldDescriptor.TYPE_MESSAGE or item is None:
            continue
        sub = "%s.%s" % (path, field.name)
        if field.label == FieldDescriptor.LABEL_REPEATED and not field.message_type.GetOptions().map_entry:
            if isinstance(item, list):
                for i, element in enumerate(item):
                    _check_fields(element, field.message_type, "%s[%d]" % (sub, i))
        elif not field.message_type.GetOptions().map_entry:
            _check_fields(item, field.message_type, sub)


def to_message(value: Any, cls: Type[M], path: str) -> M:
    """`value` if it is a `cls`, else a dict parsed into one (JSON mapping:
    camelCase or proto field names). InvalidArgument names the field path
    starting at `path` ("job", "sweep", "request")."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise TypeError("expected %s or dict, got %s" % (cls.__name__, type(value).__name__))
    _check_fields(value, cls.DESCRIPTOR, path)
    try:
        return json_format.ParseDict(value, cls())
    except json_format.ParseError as e:
        raise InvalidArgument(grpc.StatusCode.INVALID_ARGUMENT,
                              "%s: %s" % (path, str(e).split("\n")[0])) from None
