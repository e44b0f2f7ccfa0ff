"""MaskFormer (mask classification) with the official plain pixel decoder, FaPN-full's (FAM without FSM) or one
of FaPN's ablation necks as pixel decoder.

One small module per concern: ``pixel_decoder`` (+ ``pixel_decoder_variants``: the ablation table) ·
``transformer`` (position embedding, encoder/decoder) · ``predictor`` (queries → class logits and mask embeddings) ·
``inference`` (semantic scores) · ``matcher`` and ``criterion`` (training losses) · ``model`` (the meta-architecture
and its builder) · ``convert`` (official checkpoint keys and configs).
"""

from .inference import scores_to_probabilities, semantic_inference
from .model import MaskFormer, build_maskformer, semantic_targets
from .pixel_decoder import PIXEL_DECODERS, MaskFormerFeatureAlign, PixelDecoder

__all__ = [
    "MaskFormer", "MaskFormerFeatureAlign", "PIXEL_DECODERS", "PixelDecoder", "build_maskformer",
    "scores_to_probabilities", "semantic_inference", "semantic_targets",
]
