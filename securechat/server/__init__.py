"""The grpc.aio chat server."""
