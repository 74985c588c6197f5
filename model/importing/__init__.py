"""Turning a model made elsewhere into a stroke-triage checkpoint (``stroke-triage import-model``).

A Hugging Face ``ViTForImageClassification`` folder (``model.importing.huggingface``) or a plain
timm state dict (``model.importing.timm_weights``) becomes ``model.safetensors`` + ``spec.json``
(``model.importing.importer``), which the serving path loads like any other checkpoint. Serving
never imports this package, and nothing here imports ``transformers``: the weights are mapped by
name. Files are read without running code (``model.importing.files``).
"""
