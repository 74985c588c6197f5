"""Training, evaluation and research on the model: never imported by the serving path.

``config`` (what a run is), ``train`` (a run's steps), ``loop`` (the one optimisation loop the
classifier, its CNN teacher and masked-autoencoder pretraining share), ``scoring`` (validation
predictions and the decision rule), ``state`` (resumable run state), ``data``, ``bags``,
``distill``, ``pretrain``, ``schedule``, ``evaluate``, ``crossval``. The metrics it shares with
the serving-side commands are in ``model.evaluation``.
"""
