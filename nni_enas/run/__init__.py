"""What ``search.py`` and ``retrain.py`` share and the library does not need: the command-line
contract (:mod:`~nni_enas.run.cli`), run folders with their lock and settings
(:mod:`~nni_enas.run.folder`), checkpoints (:mod:`~nni_enas.run.checkpoints`), signals, progress
bars and fit endings (:mod:`~nni_enas.run.control`), and NNI trial reporting
(:mod:`~nni_enas.run.nni_report`). The plumbing imports the library, never the other way round.
"""
