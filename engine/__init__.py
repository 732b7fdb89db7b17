"""OrderSight engine: real-time order risk scoring over gRPC."""
