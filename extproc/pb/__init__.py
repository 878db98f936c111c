"""Code generated from protos/ (`make protos`; never edit *_pb2.py / *_pb2.pyi) and its codecs."""
