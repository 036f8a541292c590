"""The whole pipeline, prompt to image: ``shapes`` (the tiny world's ShapesPipeline, a
``diffusers.DiffusionPipeline`` of the three trained stages) and ``pretrained`` (the same
call on open_clip, a chat LLM and Stable Diffusion). ``common`` holds what both share."""
