"""The ENAS algorithm: controller, shared-weight alternation, the NNI strategy, and the export.

Read in this order: :mod:`~nni_enas.search.controller` (the REINFORCE controller that samples
architectures), :mod:`~nni_enas.search.enas` (the ENAS module and the ``Enas`` strategy: child steps,
then the controller phase on rewards), :mod:`~nni_enas.search.export` (the best of K sampled
architectures, written as ``exported.json``) and :mod:`~nni_enas.search.trainer` (``EnasTrainer``,
the whole search as one object).
"""
