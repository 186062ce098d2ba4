"""mlc: an ahead-of-time compiler from ONNX models to deployable bundles."""

__version__ = "0.1.0"
