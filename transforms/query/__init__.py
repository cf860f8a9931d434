"""The query front end: text → tokens → syntax tree (``parser``, ``ast``) → plan (``lower``, ``plan``),
plus the per-row code a step's expressions become (``expressions``, ``runtime``, ``builtins``).

No Beam here: the operators that turn a plan into PTransforms live in ``transforms.operators``.
"""
