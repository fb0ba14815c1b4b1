"""The gateway's gRPC messages (protos/gateway.proto), a generated copy: ``python -m protos.generate``."""
