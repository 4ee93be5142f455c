"""End-to-end tests: the local stack (moto, the bridge to the real Lambda handler, workers, models) or a browser on Flower; marked slow."""
