"""ONNX -> TFLite without TensorFlow: an ONNX -> StableHLO emitter (channels-last inside), the
litert-converter lowering to a flatbuffer, and int8 variants through ai-edge-quantizer."""
