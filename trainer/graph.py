"""A thin builder over `onnx.helper` so that features, detectors and calibration read as math."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
ML_OPSET = 3


@dataclass
class GraphBuilder:
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    _count: int = 0
    _cache: dict[str, str] = field(default_factory=dict)

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: Any, hint: str = "c", dtype: type = np.float32) -> str:
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, domain: str = "", **attrs: Any) -> str:
        (out,) = self.op_multi(op_type, list(inputs), 1, domain=domain, **attrs)
        return out

    def op_multi(
        self,
        op_type: str,
        inputs: list[str],
        n_out: int,
        domain: str = "",
        unused: tuple[int, ...] = (),
        **attrs: Any,
    ) -> list[str]:
        """A node with `n_out` outputs; those at the `unused` positions get ONNX's empty name,
        so the operator need not write them (an LSTM's every-step output when only its last
        state is read)."""
        outs = ["" if i in unused else self.fresh(op_type.lower()) for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, domain=domain or None, **attrs))
        return outs

    def once(self, key: str, build: Any) -> str:
        """Build a shared intermediate (say, the window mean) once, however many users it has."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def rename(self, tensor: str, name: str) -> None:
        self.nodes.append(helper.make_node("Identity", [tensor], [name]))

    def model(
        self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto]
    ) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "edge_detector", inputs, outputs, self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[
                helper.make_opsetid("", OPSET),
                helper.make_opsetid("ai.onnx.ml", ML_OPSET),
            ],
            producer_name="edge-trainer",
        )
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model


def float_input(
    name: str, shape: list[int | str], elem_type: int = TensorProto.FLOAT
) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def squared_distances(
    g: GraphBuilder, x: str, points: np.ndarray, hint: str, offset: np.ndarray | float = 0.0
) -> str:
    """[batch, n_points] squared Euclidean distances from float64 rows `x` to fixed `points`,
    plus `offset` per point: |x|² + (-2 x·p + |p|² + offset), the bracket one Gemm (may dip a
    hair below 0 by rounding)."""
    f64 = np.float64
    x_sq = g.op("ReduceSum", g.op("Mul", x, x), g.const([1], "ax", np.int64), keepdims=1)
    cross = g.op(
        "Gemm",
        x,
        g.const(-2.0 * points.T, f"{hint}_pt", f64),
        g.const((points**2).sum(axis=1) + offset, f"{hint}_sq", f64),
    )
    return g.op("Add", cross, x_sq)
