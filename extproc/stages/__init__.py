"""Per-stream ext_proc stages (no grpc imports here: the server drives them)."""
