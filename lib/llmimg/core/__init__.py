"""The foundations every other layer builds on.

``config`` (profiles, the sizes table, devices, folders), ``seeding`` (the one rule for
random streams), ``store`` (atomic files and folders, safetensors, the manifest, the model
cache), ``training`` (the one training loop), ``text`` (the tokenizer and prompt checks),
``checks`` (argument checks the stages and pipelines share), ``data`` (ShapesWorld),
``evaluation`` (ShapesEval, statistics, CLIP-space distances), ``viz`` (pictures) and
``versions`` (where the supported versions of the dependencies differ).
"""
