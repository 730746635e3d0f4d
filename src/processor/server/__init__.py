"""The model server (`python -m processor serve`): TF Serving's gRPC and REST APIs over several models
and their versions (registry.py), gRPC served from C++ (grpc_api.py, processor._grpc)."""
