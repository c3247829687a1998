"""Inference: batched classification, the Recognizer (faces -> emotions), video tracking, CLI predict."""
