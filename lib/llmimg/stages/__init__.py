"""The three trained stages: ``clip`` (stage 1), ``llm`` (stage 2) and ``generator`` (stage 3).

Each stage is a package with the same public face:

* ``Config`` dataclass and ``default_config(profile)``: what the profile trains;
* ``train(config, *upstream, work_dir=None, progress=True, device=None)``: a trained model,
  not yet saved, whose ``manifest`` holds its history and training time;
* the model class's ``save_pretrained(folder)`` / ``from_pretrained(folder)``;
* ``get(profile, *, config=None, force=False, progress=True)``: the profile's model from
  the cache, trained, evaluated and saved first if it is missing;
* ``evaluate(model, n)``: the metrics ``llmimg eval STAGE`` prints, and ``HEADLINE``, the
  ones notebooks record and the reference check compares.
"""
