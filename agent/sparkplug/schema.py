"""The Sparkplug B payload schema, declared in code and turned into message classes by the
protobuf runtime at import.

Written from the field list of the Sparkplug B specification (Payload and Payload.Metric; the
metadata, property-set, dataset and template parts are left out, so the parser skips them as
unknown fields). Declared here rather than compiled with protoc: no build step, and no
generated module pinned to the protobuf version that generated it (protobuf checks generated
code against its runtime and refuses or warns across major versions; the runtime on a gateway is
whichever onnxruntime pulled in). See docs/sparkplug.md.

Importing this module imports protobuf: only the Sparkplug decoder and tests do.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED

# Sparkplug B data types (the spec's DataType enumeration) this agent reads as numbers.
INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING = 9, 10, 11, 12
DATETIME, TEXT = 13, 14
SIGNED_BITS = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}

# (name, number, type, label, message type) of Payload.Metric; int_value … bytes_value form the
# `value` oneof.
_METRIC_FIELDS = [
    ("name", 1, _F.TYPE_STRING, _OPTIONAL, None),
    ("alias", 2, _F.TYPE_UINT64, _OPTIONAL, None),
    ("timestamp", 3, _F.TYPE_UINT64, _OPTIONAL, None),
    ("datatype", 4, _F.TYPE_UINT32, _OPTIONAL, None),
    ("is_historical", 5, _F.TYPE_BOOL, _OPTIONAL, None),
    ("is_transient", 6, _F.TYPE_BOOL, _OPTIONAL, None),
    ("is_null", 7, _F.TYPE_BOOL, _OPTIONAL, None),
]
_VALUE_FIELDS = [
    ("int_value", 10, _F.TYPE_UINT32),
    ("long_value", 11, _F.TYPE_UINT64),
    ("float_value", 12, _F.TYPE_FLOAT),
    ("double_value", 13, _F.TYPE_DOUBLE),
    ("boolean_value", 14, _F.TYPE_BOOL),
    ("string_value", 15, _F.TYPE_STRING),
    ("bytes_value", 16, _F.TYPE_BYTES),
]
_PAYLOAD_FIELDS = [
    ("timestamp", 1, _F.TYPE_UINT64, _OPTIONAL, None),
    ("metrics", 2, _F.TYPE_MESSAGE, _REPEATED, ".org.eclipse.tahu.protobuf.Payload.Metric"),
    ("seq", 3, _F.TYPE_UINT64, _OPTIONAL, None),
    ("uuid", 4, _F.TYPE_STRING, _OPTIONAL, None),
    ("body", 5, _F.TYPE_BYTES, _OPTIONAL, None),
]


def _add(message: descriptor_pb2.DescriptorProto, fields: list) -> None:
    for name, number, kind, label, type_name in fields:
        field = message.field.add(name=name, number=number, type=kind, label=label)
        if type_name:
            field.type_name = type_name


def _file() -> descriptor_pb2.FileDescriptorProto:
    # The specification's package name: the wire format does not carry it, but keeping it
    # makes text dumps and errors read like every other Sparkplug tool's.
    proto = descriptor_pb2.FileDescriptorProto(
        name="edge_agent/sparkplug_b.proto", package="org.eclipse.tahu.protobuf", syntax="proto2"
    )
    payload = proto.message_type.add(name="Payload")
    _add(payload, _PAYLOAD_FIELDS)
    metric = payload.nested_type.add(name="Metric")
    _add(metric, _METRIC_FIELDS)
    metric.oneof_decl.add(name="value")
    for name, number, kind in _VALUE_FIELDS:
        metric.field.add(name=name, number=number, type=kind, label=_OPTIONAL, oneof_index=0)
    return proto


def _payload_class() -> type:
    pool = descriptor_pool.DescriptorPool()  # our own: never clashes with another copy
    pool.Add(_file())
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("org.eclipse.tahu.protobuf.Payload")
    )


Payload = _payload_class()
