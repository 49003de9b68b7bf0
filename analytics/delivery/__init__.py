"""Delivery: the uploader thread, its retry policy and the cross-process upload lease."""
