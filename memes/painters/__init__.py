"""Painters of the templates' backgrounds.

Each painter draws one template's background at ``BASE_SIZE``, from Pillow primitives
only, and deterministically: a random choice uses a seeded ``random.Random``.
"""
