"""Training recipes (the child model's loss, metrics and optimizer), retraining, and CUDA graphs.

:mod:`~nni_enas.training.classification` is the image-classification recipe used both by the search's
child steps and by retraining; :mod:`~nni_enas.training.retraining` trains a fixed architecture from
scratch (aux head, drop path, data); :mod:`~nni_enas.training.cuda_graphs` is the one module that owns
CUDA-graph capture (``--cuda-graphs auto|off``).
"""
