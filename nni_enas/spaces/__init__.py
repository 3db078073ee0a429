"""The search spaces, written against NNI mutables and knowing nothing of the search algorithm.

Read in this order: :mod:`~nni_enas.spaces.ops` (the one op table, shared by the spaces and
retraining), :mod:`~nni_enas.spaces.base` (what every ENAS space declares), :mod:`~nni_enas.spaces.macro`
and :mod:`~nni_enas.spaces.micro` (the two CNN spaces), :mod:`~nni_enas.spaces.recurrent` (the recurrent
cell of the language model), and :mod:`~nni_enas.spaces.supernet` (how a space's choices become
shared weights routed by one sampled architecture).
"""
