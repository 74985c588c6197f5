"""stroke-triage: model.

The Vision Transformer, its preprocessing, checkpoints, training and evaluation. Imports nothing
of ours. Import the submodules directly (``model.inference.Classifier``,
``model.checkpoint.load_checkpoint``, ``model.preprocess``, ``model.phantom``); this package
module stays empty so that importing ``model.errors`` does not pull in torch.
"""
