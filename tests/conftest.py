"""Shared pytest configuration for the nni-enas tests."""


def pytest_configure(config):
    config.addinivalue_line(
        'markers',
        'nnictl: end-to-end test that starts a real NNI experiment with nnictl (slow; '
        'deselect with -m "not nnictl")',
    )
