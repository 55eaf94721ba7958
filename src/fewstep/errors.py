"""User-facing errors: one line that says what is wrong and how to fix it."""


class FewstepError(Exception):
    """Bad input (config, path, dataset, checkpoint). The CLI prints it as a single line."""
