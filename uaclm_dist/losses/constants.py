"""Constants shared by the loss code and the data code, importable without torch."""

IGNORE_INDEX = -100  # label of a position that takes no part in any loss or diagnostic
