"""Planning a training run from the data and the budget (issue 19): the data's fingerprint first."""
