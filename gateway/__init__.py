"""polyvec gateway: HTTP + gRPC fronts over one service layer, storage on Qdrant."""
