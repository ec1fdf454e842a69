"""Our trimmed crates/server/proto/*.proto agree with Triton's own descriptors (the ones
tritonclient ships) on every field and enum value they share: names, numbers, types."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from tritonclient.grpc import model_config_pb2, service_pb2

from conftest import ROOT


def our_descriptors() -> descriptor_pb2.FileDescriptorSet:
    """The descriptor set build.rs wrote (newest release or debug build)."""
    found = sorted(ROOT.glob("target/*/build/metal-mps-server-*/out/inference_descriptor.bin"),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        pytest.skip("crates/server has not been built")
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(Path(found[-1]).read_bytes())
    return fds


def flatten(messages, enums, prefix=""):
    """{'Msg.field': (number, type, label, type name)} and {'Enum.VALUE': number}."""
    fields, values = {}, {}
    for e in enums:
        values.update({f"{prefix}{e.name}.{v.name}": v.number for v in e.value})
    for m in messages:
        name = prefix + m.name
        fields.update({f"{name}.{f.name}": (f.number, f.type, f.label, f.type_name.split(".")[-1]) for f in m.field})
        fields[name] = ()
        f2, v2 = flatten(m.nested_type, m.enum_type, name + ".")
        fields.update(f2)
        values.update(v2)
    return fields, values


def triton() -> tuple[dict, dict]:
    fields, values = {}, {}
    for mod in (service_pb2, model_config_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        mod.DESCRIPTOR.CopyToProto(proto)
        f, v = flatten(proto.message_type, proto.enum_type)
        fields.update(f)
        values.update(v)
    return fields, values


def test_every_field_and_enum_value_matches_triton():
    theirs_f, theirs_v = triton()
    ours_f, ours_v = {}, {}
    for proto in our_descriptors().file:
        f, v = flatten(proto.message_type, proto.enum_type)
        ours_f.update(f)
        ours_v.update(v)
    assert len(ours_f) > 150
    assert {k: v for k, v in ours_f.items() if theirs_f.get(k) != v} == {}
    assert {k: v for k, v in ours_v.items() if theirs_v.get(k) != v} == {}


def test_every_rpc_matches_triton():
    ours = {}
    for proto in our_descriptors().file:
        for s in proto.service:
            ours.update({f"{s.name}.{m.name}": (m.input_type.split(".")[-1], m.output_type.split(".")[-1])
                         for m in s.method})
    theirs_proto = descriptor_pb2.FileDescriptorProto()
    service_pb2.DESCRIPTOR.CopyToProto(theirs_proto)
    theirs = {f"{s.name}.{m.name}": (m.input_type.split(".")[-1], m.output_type.split(".")[-1])
              for s in theirs_proto.service for m in s.method}
    assert len(ours) == 11
    assert {k: v for k, v in ours.items() if theirs.get(k) != v} == {}
