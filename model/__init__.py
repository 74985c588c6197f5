"""stroke-triage: model.

The Vision Transformer, its preprocessing, checkpoints, training and evaluation. Imports nothing
of ours. The serving path is the modules here (``model.inference.Classifier``,
``model.checkpoint.load_checkpoint``, ``model.dicom``, ``model.pixels``, ``model.explain``,
``model.phantom``); training, evaluation and research live in ``model.training``, which serving
never imports. Import the submodules directly: this package module stays empty so that
importing ``model.errors`` does not pull in torch.
"""
