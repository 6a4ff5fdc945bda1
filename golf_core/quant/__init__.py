"""Post-train quantization: the QuantState container, the int8 default and artifact accounting."""
