"""Privacy: identity and keyed hashing, the scrubber, and size caps."""
